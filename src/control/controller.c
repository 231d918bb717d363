/* controller.c — Deployments → pods (app + sidecar) → endpoints → proxy configs. */
#include "control/controller.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <openssl/rand.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "control/compile.h"
#include "control/images.h"
#include "control/runtime.h"
#include "control/secrets.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/net.h"
#include "core/str.h"

#define MAX_EVENTS 256
#define HPA_WINDOW_MS 5000

struct dep;

struct pod {
    struct controller *c;
    struct dep *dep;
    struct pod *next;
    const struct model_deployment *spec; /* what it was started from (its model is kept) */
    char id[128];
    char dir[PATH_MAX];
    char hash[17];          /* the revision it runs */
    char spiffe[256];
    char token[65];
    int app_port, inbound_port, outbound_port, admin_port;
    char app_addr[32], inbound_addr[32], outbound_addr[32], admin_addr[32];
    char *config;           /* the last config text pushed (version blanked) */
    uint64_t config_seq;    /* its version number */
    uint64_t term_seq;      /* terminating: pushes up to this one remove it */
    uint64_t term_deadline; /* stop even without every proxy's ack */
    struct loop_timer term_timer;
    struct rt_replica *rr;
    bool ready, terminating, stopping, has_proxy;
    uint64_t ready_since_ms; /* loop time it last turned ready */
    time_t started;
    int restarts_at_stop;   /* the runtime frees its replica when stopped */
    struct {                /* HPA: CPU seconds samples, a ring */
        double cpu;
        uint64_t at_ms;
    } cpu[16], rq[16];      /* ... and served requests (requests/s) */
    unsigned ncpu, nrq;
    struct http1_client_call *metrics_call; /* reading its /metrics for requests/s */
};

struct hpa_rec {
    uint64_t at_ms;
    int replicas;
};

struct dep {
    struct controller *c;
    struct dep *next;
    const struct model_deployment *d;    /* desired revision */
    const struct model_deployment *prev; /* the one before (rollout undo) */
    unsigned nonce, prev_nonce;          /* rollout restarts */
    char hash[17], prev_hash[17];        /* revision ids: template hash, plus the restart nonce */
    struct pod *pods;
    int desired;
    int restarts_gone;                   /* restarts of pods that are gone */
    int restarts_exported;               /* what strata_workload_restarts_total has counted */
    bool scale_down_blocked;             /* ScaleDownBlocked said once, until it clears */
    bool deleted;
    struct hpa_rec recs[128];
    size_t nrecs;
};

struct old_model {
    struct old_model *next;
    struct model *m;
    json_t *secrets;
};

struct event {
    time_t at;
    char object[128], reason[48], message[256];
};

struct controller {
    struct controller_config cfg;
    struct model *m;
    json_t *secrets;
    struct loop *loop;
    struct http1_client *client;
    struct rt *rt;
    struct dep *deps;
    struct old_model *old_models;
    struct loop_defer push_defer, reconcile_defer;
    struct loop_timer tick, hpa_timer;
    bool push_pending, reconcile_pending, stopping;
    uint64_t version_seq;
    int stops_pending;
    void (*stopped)(void *arg);
    void *stopped_arg;
    struct metrics_family *m_desired, *m_ready, *m_updated, *m_restarts, *m_hpa_min, *m_hpa_max, *m_hpa_desired;
    struct metrics_counter *m_pushes;
    struct event events[MAX_EVENTS];
    size_t nevents, event_next;
};

/* ---- small helpers ------------------------------------------------------ */

static void event(struct controller *c, const char *object, const char *reason, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void event(struct controller *c, const char *object, const char *reason, const char *fmt, ...)
{
    struct event *e = &c->events[c->event_next];
    c->event_next = (c->event_next + 1) % MAX_EVENTS;
    if (c->nevents < MAX_EVENTS)
        c->nevents++;
    e->at = time(NULL);
    snprintf(e->object, sizeof e->object, "%s", object);
    snprintf(e->reason, sizeof e->reason, "%s", reason);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    log_info("event", LOG_STR("object", e->object), LOG_STR("reason", e->reason), LOG_STR("message", e->message));
}

static void token_hex(char *out, size_t nbytes)
{
    unsigned char b[64];
    if (nbytes > sizeof b || RAND_bytes(b, (int)nbytes) != 1)
        abort(); /* no randomness: nothing safe can be done */
    for (size_t i = 0; i < nbytes; i++)
        snprintf(out + 2 * i, 3, "%02x", b[i]);
}

static int bind_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof a;
    int rc = bind(fd, (struct sockaddr *)&a, sizeof a) == 0 && getsockname(fd, (struct sockaddr *)&a, &len) == 0
                 ? ntohs(a.sin_port)
                 : -errno;
    close(fd);
    return rc;
}

int controller_free_port(const int *avoid, size_t navoid)
{
    for (int tries = 0; tries < 64; tries++) {
        int port = bind_free_port();
        if (port < 0)
            return port;
        size_t i = 0;
        while (i < navoid && avoid[i] != port)
            i++;
        if (i == navoid)
            return port;
    }
    return -EADDRINUSE;
}

static int mkdirs(const char *path, mode_t mode)
{
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(tmp, mode) < 0 && errno != EEXIST)
            return -errno;
        *p = '/';
    }
    return mkdir(tmp, mode) < 0 && errno != EEXIST ? -errno : 0;
}

static const char *secret_value(const struct controller *c, const char *name, const char *key)
{
    return json_string_value(json_object_get(json_object_get(c->secrets, name), key));
}

static const char *configmap_value(const struct controller *c, const char *name, const char *key)
{
    const struct model_configmap *cm = model_configmap(c->m, name);
    for (size_t i = 0; cm && i < cm->ndata; i++)
        if (!strcmp(cm->data[i].key, key))
            return cm->data[i].value;
    return NULL;
}

/* ---- environment -------------------------------------------------------- */

struct envbuf {
    char **v;
    size_t n, cap;
};

static int env_put(struct envbuf *e, const char *name, const char *value)
{
    size_t len = strlen(name);
    for (size_t i = 0; i < e->n; i++)
        if (!strncmp(e->v[i], name, len) && e->v[i][len] == '=') {
            free(e->v[i]);
            e->v[i] = NULL;
            if (asprintf(&e->v[i], "%s=%s", name, value) < 0)
                return -ENOMEM;
            return 0;
        }
    if (e->n + 2 > e->cap) {
        size_t cap = e->cap ? e->cap * 2 : 32;
        char **v = realloc(e->v, cap * sizeof *v);
        if (!v)
            return -ENOMEM;
        e->v = v;
        e->cap = cap;
    }
    if (asprintf(&e->v[e->n], "%s=%s", name, value) < 0)
        return -ENOMEM;
    e->v[++e->n] = NULL;
    return 0;
}

static void env_del(struct envbuf *e, const char *name)
{
    size_t len = strlen(name);
    for (size_t i = 0; i < e->n; i++)
        if (!strncmp(e->v[i], name, len) && e->v[i][len] == '=') {
            free(e->v[i]);
            memmove(&e->v[i], &e->v[i + 1], (e->n - i) * sizeof *e->v);
            e->n--;
            return;
        }
}

static void env_free(struct envbuf *e)
{
    for (size_t i = 0; i < e->n; i++)
        free(e->v[i]);
    free(e->v);
}

struct mount_map {
    const char *from; /* mountPath */
    char to[PATH_MAX + 32];
};

/* Writes the Secret/ConfigMap volumes of container k into the pod dir. */
static int write_volumes(struct pod *p, const struct model_container *k, struct mount_map *maps, size_t *nmaps)
{
    *nmaps = 0;
    for (size_t i = 0; i < k->nmounts && i < 16; i++) {
        const struct model_volume_mount *mt = &k->mounts[i];
        struct mount_map *mm = &maps[(*nmaps)++];
        mm->from = mt->mount_path;
        snprintf(mm->to, sizeof mm->to, "%s/volumes/%zu", p->dir, i);
        int rc = mkdirs(mm->to, 0700);
        if (rc < 0)
            return rc;
        json_t *obj = mt->secret_name ? json_object_get(p->c->secrets, mt->secret_name) : NULL;
        const char *key;
        json_t *v;
        json_object_foreach(obj, key, v)
        {
            char path[PATH_MAX + 256];
            snprintf(path, sizeof path, "%s/%s", mm->to, key);
            const char *text = json_string_value(v);
            if (text && (rc = secrets_write_file(path, text, strlen(text), 0600)) < 0)
                return rc;
        }
        const struct model_configmap *cm = mt->configmap_name ? model_configmap(p->c->m, mt->configmap_name) : NULL;
        for (size_t j = 0; cm && j < cm->ndata; j++) {
            char path[PATH_MAX + 256];
            snprintf(path, sizeof path, "%s/%s", mm->to, cm->data[j].key);
            if ((rc = secrets_write_file(path, cm->data[j].value, strlen(cm->data[j].value), 0644)) < 0)
                return rc;
        }
    }
    return 0;
}

/* A value naming a path under a mountPath points into the pod's copy. */
static int env_put_mapped(struct envbuf *e, const char *name, const char *value, const struct mount_map *maps,
                          size_t nmaps)
{
    for (size_t i = 0; i < nmaps; i++) {
        size_t len = strlen(maps[i].from);
        if (!strncmp(value, maps[i].from, len) && (value[len] == '\0' || value[len] == '/')) {
            char v[PATH_MAX * 2];
            snprintf(v, sizeof v, "%s%s", maps[i].to, value + len);
            return env_put(e, name, v);
        }
    }
    return env_put(e, name, value);
}

static int app_env(struct pod *p, const struct model_container *k, struct envbuf *e)
{
    struct mount_map maps[16];
    size_t nmaps;
    int rc = write_volumes(p, k, maps, &nmaps);
    if (rc < 0)
        return rc;
    env_put(e, "PATH", "/usr/local/bin:/usr/bin:/bin");
    env_put(e, "HOSTNAME", p->id);
    for (size_t i = 0; i < k->nenv; i++) {
        const struct model_env *v = &k->env[i];
        const char *val = v->value;
        if (!val && v->secret_name)
            val = secret_value(p->c, v->secret_name, v->key);
        else if (!val && v->configmap_name)
            val = configmap_value(p->c, v->configmap_name, v->key);
        if (!val) {
            if (v->optional)
                continue;
            event(p->c, p->id, "CreateContainerConfigError", "env %s: %s %s has no key %s", v->name,
                  v->secret_name ? "Secret" : "ConfigMap", v->secret_name ? v->secret_name : v->configmap_name,
                  v->key);
            return -ENOENT;
        }
        if ((rc = env_put_mapped(e, v->name, val, maps, nmaps)) < 0)
            return rc;
    }
    if (p->c->cfg.otlp_endpoint) {
        bool named = false;
        for (size_t i = 0; i < e->n; i++)
            named |= !strncmp(e->v[i], "OTEL_SERVICE_NAME=", 18);
        if (!named) {
            const char *svc = model_label(&p->spec->pod_labels, "app");
            env_put(e, "OTEL_SERVICE_NAME", svc ? svc : p->spec->name);
        }
        env_put(e, "OTEL_EXPORTER_OTLP_ENDPOINT", p->c->cfg.otlp_endpoint);
    }
    /* The pod's network is loopback with remapped ports. */
    env_del(e, "PORT");
    env_put(e, "LISTEN_ADDR", p->app_addr);
    if (p->has_proxy && !p->dep->d->is_gateway) {
        char proxy[64];
        snprintf(proxy, sizeof proxy, "http://%s", p->outbound_addr);
        env_put(e, "HTTP_PROXY", proxy);
    }
    return 0;
}

/* ---- compiling and pushing configs -------------------------------------- */

#define for_each_dep(c, dp) for (struct dep *dp = (c)->deps; dp; dp = dp->next)
#define for_each_pod(dp, p) for (struct pod *p = (dp)->pods; p; p = p->next)

static size_t collect_endpoints(struct controller *c, struct compile_endpoint *eps, size_t max)
{
    size_t n = 0;
    for_each_dep(c, dp) for_each_pod(dp, p)
    {
        if (p->spec->is_gateway || n == max)
            continue;
        eps[n++] = (struct compile_endpoint){
            .replica = p->id,
            .deployment = p->spec->name,
            .labels = &p->spec->pod_labels,
            .address = p->has_proxy ? p->inbound_addr : p->app_addr,
            .mtls = p->has_proxy,
            .spiffe_id = p->spiffe,
            .ready = p->ready && !p->terminating,
        };
    }
    return n;
}

static int compile_for(struct controller *c, struct pod *p, const struct compile_endpoint *eps, size_t neps)
{
    char cert[PATH_MAX + 32], key[PATH_MAX + 32], ca[PATH_MAX + 32];
    snprintf(cert, sizeof cert, "%s/certs/cert.pem", p->dir);
    snprintf(key, sizeof key, "%s/certs/key.pem", p->dir);
    snprintf(ca, sizeof ca, "%s/certs/ca.pem", p->dir);
    const struct model_deployment *d = p->spec;
    struct compile_proxy cp = {
        .id = p->id,
        .deployment = d,
        .trust_domain = c->cfg.trust_domain,
        .spiffe_id = p->spiffe,
        .admin_addr = p->admin_addr,
        .cert_file = cert,
        .key_file = key,
        .ca_file = ca,
        .app_addr = p->app_addr,
        .inbound_addr = p->inbound_addr,
        .outbound_addr = p->outbound_addr,
        .http_addr = c->cfg.gateway_http,
        .https_addr = c->cfg.gateway_https,
        .redis_addr = c->cfg.redis_addr,
        .workers = d->is_gateway ? 0 : 1,
    };
    char err[512];
    json_t *j = compile_proxy_config(c->m, eps, neps, &cp, "", err, sizeof err);
    if (!j) {
        event(c, p->id, "CompileFailed", "%s", err);
        return -EINVAL;
    }
    char *text = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
    if (!text) {
        json_decref(j);
        return -ENOMEM;
    }
    if (p->config && !strcmp(p->config, text)) { /* unchanged: no push */
        free(text);
        json_decref(j);
        return 0;
    }
    free(p->config);
    p->config = text;
    char version[32];
    snprintf(version, sizeof version, "v%llu", (unsigned long long)++c->version_seq);
    json_object_set_new(j, "version", json_string(version));
    char *full = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(j);
    if (!full)
        return -ENOMEM;
    p->config_seq = c->version_seq;
    log_info("config pushed", LOG_STR("proxy", p->id), LOG_STR("version", version));
    metrics_counter_add(c->m_pushes, 1);
    int rc = xds_set_config(c->cfg.xds, p->id, version, full, strlen(full));
    free(full);
    return rc;
}

static void push_all(void *arg)
{
    struct controller *c = arg;
    c->push_pending = false;
    static struct compile_endpoint eps[4096];
    size_t n = collect_endpoints(c, eps, sizeof eps / sizeof *eps);
    for_each_dep(c, dp) for_each_pod(dp, p) if (p->has_proxy && p->rr && !p->stopping) compile_for(c, p, eps, n);
    /* Whoever waits to be out of the endpoints: this push did it. */
    for_each_dep(c, dp) for_each_pod(dp, p) if (p->terminating && !p->term_seq) p->term_seq = c->version_seq;
}

static void changed(struct controller *c)
{
    if (c->push_pending)
        return;
    c->push_pending = true;
    loop_defer(c->loop, &c->push_defer, push_all, c);
}

static void reconcile(struct controller *c);

static void reconcile_deferred(void *arg)
{
    struct controller *c = arg;
    c->reconcile_pending = false;
    reconcile(c);
}

static void schedule_reconcile(struct controller *c)
{
    if (c->reconcile_pending || c->stopping)
        return;
    c->reconcile_pending = true;
    loop_defer(c->loop, &c->reconcile_defer, reconcile_deferred, c);
}

/* ---- pods --------------------------------------------------------------- */

static void on_ready(struct rt_replica *r, bool ready, void *arg)
{
    struct pod *p = arg;
    (void)r;
    if (p->ready == ready)
        return;
    p->ready = ready;
    p->ready_since_ms = loop_now_ms(p->c->loop);
    event(p->c, p->id, ready ? "Ready" : "NotReady", "replica %s", ready ? "ready" : "not ready");
    changed(p->c);
    schedule_reconcile(p->c);
}

static void on_restart(struct rt_replica *r, const char *container, int status, uint32_t delay_ms, void *arg)
{
    struct pod *p = arg;
    (void)r;
    event(p->c, p->id, "BackOff", "container %s exited (status %d): restarting in %u ms", container, status,
          delay_ms);
}

static const char *image_path(struct controller *c, const char *ref, char *path, size_t pathsz, const char *who)
{
    char digest[80], err[512];
    if (image_resolve(c->cfg.images_dir, ref, path, pathsz, digest, sizeof digest, err, sizeof err) < 0) {
        event(c, who, "ErrImagePull", "%s", err);
        return NULL;
    }
    return path;
}

static void pod_free(struct pod *p)
{
    if (p->metrics_call)
        http1_client_cancel(p->metrics_call);
    loop_timer_stop(&p->term_timer);
    free(p->config);
    free(p);
}

/* Ports in use or promised: the configured ones, every pod's, and the
 * ones this pod already got. */
static size_t taken_ports(const struct controller *c, int *out, size_t max)
{
    size_t n = 0;
    for (size_t i = 0; i < c->cfg.nreserved_ports && n < max; i++)
        out[n++] = c->cfg.reserved_ports[i];
    for_each_dep(c, dp) for_each_pod(dp, q) for (int k = 0; k < 4 && n < max; k++) out[n++] =
        k == 0 ? q->app_port : k == 1 ? q->inbound_port : k == 2 ? q->outbound_port : q->admin_port;
    return n;
}

static int pod_ports(struct pod *p)
{
    static int avoid[4096 + 4];
    size_t n = taken_ports(p->c, avoid, 4096);
    int ports[4];
    for (int i = 0; i < 4; i++) {
        if ((ports[i] = controller_free_port(avoid, n)) < 0)
            return ports[i];
        avoid[n++] = ports[i];
    }
    p->app_port = ports[0];
    p->inbound_port = ports[1];
    p->outbound_port = ports[2];
    p->admin_port = ports[3];
    snprintf(p->app_addr, sizeof p->app_addr, "127.0.0.1:%d", p->app_port);
    snprintf(p->inbound_addr, sizeof p->inbound_addr, "127.0.0.1:%d", p->inbound_port);
    snprintf(p->outbound_addr, sizeof p->outbound_addr, "127.0.0.1:%d", p->outbound_port);
    snprintf(p->admin_addr, sizeof p->admin_addr, "127.0.0.1:%d", p->admin_port);
    return 0;
}

static int pod_register(struct controller *c, struct pod *p)
{
    char path[PATH_MAX + 32];
    token_hex(p->token, 32);
    snprintf(path, sizeof path, "%s/proxy.token", p->dir);
    int rc = secrets_write_file(path, p->token, strlen(p->token), 0600);
    if (rc < 0)
        return rc;
    static const char *const gw_dns[] = { "localhost" };
    static const char *const gw_ips[] = { "127.0.0.1" };
    struct ca_names names = { .spiffe_id = p->spiffe };
    if (p->spec->is_gateway) {
        names.dns = gw_dns;
        names.ndns = 1;
        names.ips = gw_ips;
        names.nips = 1;
    }
    return xds_add_proxy(c->cfg.xds, p->id, p->token, &names);
}

static void pod_term_check(struct loop_timer *t);

static struct pod *pod_create(struct controller *c, struct dep *dp)
{
    const struct model_deployment *d = dp->d;
    struct pod *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->c = c;
    p->dep = dp;
    p->spec = d;
    memcpy(p->hash, dp->hash, sizeof p->hash);
    char suffix[11];
    token_hex(suffix, 3);
    snprintf(p->id, sizeof p->id, "%s-%.8s-%.5s", d->name, dp->hash, suffix);
    snprintf(p->dir, sizeof p->dir, "%s/pods/%s", c->cfg.state_dir, p->id);
    snprintf(p->spiffe, sizeof p->spiffe, "spiffe://%s/ns/%s/sa/%s", c->cfg.trust_domain,
             d->namespace ? d->namespace : "default", d->service_account ? d->service_account : "default");
    p->has_proxy = d->is_gateway || d->inject_sidecar;
    p->started = time(NULL);
    loop_timer_init(c->loop, &p->term_timer, pod_term_check, p);
    if (pod_ports(p) < 0 || mkdirs(p->dir, 0700) < 0) {
        event(c, p->id, "FailedCreate", "cannot prepare the pod: %s", strerror(errno));
        pod_free(p);
        return NULL;
    }
    return p;
}

/* Builds argv/env and starts the replica. */
static int pod_run(struct controller *c, struct pod *p)
{
    const struct model_deployment *d = p->spec;
    const struct model_container *k = &d->containers[0];
    char app_bin[PATH_MAX], proxy_bin[PATH_MAX], certdir[PATH_MAX + 16], tokfile[PATH_MAX + 16];
    if (!image_path(c, k->image, app_bin, sizeof app_bin, p->id))
        return -ENOENT;
    if (p->has_proxy && !image_path(c, c->cfg.proxy_image, proxy_bin, sizeof proxy_bin, p->id))
        return -ENOENT;
    snprintf(certdir, sizeof certdir, "%s/certs", p->dir);
    snprintf(tokfile, sizeof tokfile, "%s/proxy.token", p->dir);
    if (mkdirs(certdir, 0700) < 0)
        return -errno;
    int rc = pod_register(c, p);
    if (rc < 0) {
        event(c, p->id, "FailedCreate", "cannot register the pod's proxy: %s", strerror(-rc));
        return rc;
    }
    /* Its first config before it asks. */
    static struct compile_endpoint eps[4096];
    size_t neps = collect_endpoints(c, eps, sizeof eps / sizeof *eps);
    if (p->has_proxy && (rc = compile_for(c, p, eps, neps)) < 0)
        return rc;

    char *proxy_argv[] = { d->is_gateway ? app_bin : proxy_bin, "--control", (char *)c->cfg.control_url, "--node",
                           p->id, "--token-file", tokfile, "--cert-dir", certdir, NULL };
    struct envbuf app = { 0 }, side = { 0 };
    env_put(&side, "PATH", "/usr/local/bin:/usr/bin:/bin");
    env_put(&side, "LOG_LEVEL", "info");
    if (c->cfg.otlp_endpoint) {
        env_put(&side, "OTEL_EXPORTER_OTLP_ENDPOINT", c->cfg.otlp_endpoint);
        env_put(&side, "OTEL_SERVICE_NAME", d->is_gateway ? "gateway" : "sidecar");
    }
    const char *argv_app[80];
    size_t na = 0;
    if (!d->is_gateway) {
        /* command replaces the image's entrypoint (an absolute path here:
         * the pod shares the machine's filesystem). */
        if (k->ncommand)
            for (size_t i = 0; i < k->ncommand && na < 40; i++)
                argv_app[na++] = k->command[i];
        else
            argv_app[na++] = app_bin;
        for (size_t i = 0; i < k->nargs && na < 78; i++)
            argv_app[na++] = k->args[i];
    }
    argv_app[na] = NULL;
    if (!d->is_gateway && (rc = app_env(p, k, &app)) < 0) {
        env_free(&app);
        env_free(&side);
        return rc;
    }
    struct rt_replica_spec spec = {
        .id = p->id,
        .workdir = p->dir,
        .probe_host = "127.0.0.1",
        .probe_port = p->app_port,
        .startup = k->startup,
        .readiness = k->readiness,
        .liveness = k->liveness,
        .termination_grace_s = d->termination_grace_s,
    };
    if (d->is_gateway) {
        /* The gateway is the proxy itself: probed on its admin listener. */
        spec.app = (struct rt_container_spec){ .name = "proxy", .argv = proxy_argv, .envp = side.v };
        spec.probe_port = p->admin_port;
        spec.readiness = (struct model_probe){ .set = true, .path = "/readyz", .period_s = 1, .timeout_s = 1,
                                               .success_threshold = 1, .failure_threshold = 3 };
        spec.liveness = (struct model_probe){ .set = true, .path = "/healthz", .initial_delay_s = 5, .period_s = 10,
                                              .timeout_s = 2, .success_threshold = 1, .failure_threshold = 3 };
        spec.startup.set = false;
    } else {
        spec.app = (struct rt_container_spec){ .name = "app", .argv = (char *const *)argv_app, .envp = app.v };
        if (p->has_proxy) {
            spec.sidecar = (struct rt_container_spec){ .name = "proxy", .argv = proxy_argv, .envp = side.v };
            spec.sidecar_port = p->outbound_port;
        }
    }
    struct rt_replica_events ev = { .on_ready = on_ready, .on_restart = on_restart, .arg = p };
    p->rr = rt_replica_start(c->rt, &spec, &ev);
    env_free(&app);
    env_free(&side);
    if (!p->rr) {
        event(c, p->id, "FailedCreate", "the runtime could not start the replica");
        return -EIO;
    }
    event(c, p->id, "Started", "replica of %s (%s, revision %s)", d->name, k->image, p->hash);
    return 0;
}

static void pod_gone(void *arg)
{
    struct pod *p = arg;
    struct controller *c = p->c;
    struct dep *dp = p->dep;
    dp->restarts_gone += p->restarts_at_stop;
    p->rr = NULL; /* freed by the runtime */
    for (struct pod **pp = &dp->pods; *pp; pp = &(*pp)->next)
        if (*pp == p) {
            *pp = p->next;
            break;
        }
    event(c, p->id, "Stopped", "every process of the replica has exited");
    xds_remove_proxy(c->cfg.xds, p->id);
    pod_free(p);
    if (c->stopping) {
        if (--c->stops_pending == 0 && c->stopped)
            c->stopped(c->stopped_arg);
        return;
    }
    schedule_reconcile(c);
}

static uint64_t acked_seq(const struct controller *c, const struct pod *q)
{
    const char *v = xds_acked_version(c->cfg.xds, q->id);
    return v && v[0] == 'v' ? strtoull(v + 1, NULL, 10) : 0;
}

/* Out of the endpoints everywhere (every live proxy runs a config pushed
 * after the pod left them), or the deadline: then SIGTERM. */
static void pod_term_check(struct loop_timer *t)
{
    struct pod *p = t->data;
    struct controller *c = p->c;
    bool all = p->term_seq != 0;
    for_each_dep(c, dp) for_each_pod(dp, q)
    {
        if (!all)
            break;
        if (q != p && q->has_proxy && q->rr && !q->terminating && q->ready && acked_seq(c, q) < q->config_seq)
            all = false;
    }
    if (!all && loop_now_ms(c->loop) < p->term_deadline) {
        loop_timer_start(&p->term_timer, 50);
        return;
    }
    p->stopping = true;
    p->restarts_at_stop = p->rr ? rt_replica_restarts(p->rr) : 0;
    if (p->rr)
        rt_replica_stop(p->rr, pod_gone, p);
    else
        pod_gone(p);
}

static void pod_terminate(struct pod *p, const char *reason)
{
    if (p->terminating)
        return;
    struct controller *c = p->c;
    p->terminating = true;
    p->term_seq = 0;
    p->term_deadline = loop_now_ms(c->loop) + 3000;
    event(c, p->id, "Killing", "%s", reason);
    changed(c);
    loop_timer_start(&p->term_timer, 0);
}

/* ---- PodDisruptionBudgets ------------------------------------------------- */

static int intstr_resolve(const struct model_intstr *v, int total, bool round_up, int dflt)
{
    if (!v->set)
        return dflt;
    if (!v->percent)
        return v->value;
    long x = (long)v->value * total;
    return (int)(round_up ? (x + 99) / 100 : x / 100);
}

/* Would taking p away (voluntarily) break a PDB? why names it. */
static bool pdb_allows(const struct controller *c, const struct pod *p, char *why, size_t whysz)
{
    if (!p->ready || p->terminating)
        return true; /* an unavailable pod costs no availability */
    for (size_t i = 0; i < c->m->npdbs; i++) {
        const struct model_pdb *b = &c->m->pdbs[i];
        if (!model_labels_match(&b->selector, &p->spec->pod_labels))
            continue;
        int healthy = 0, expected = 0;
        for_each_dep(c, dp)
        {
            if (!dp->deleted && model_labels_match(&b->selector, &dp->d->pod_labels))
                expected += dp->desired;
            for_each_pod(dp, q) healthy += q->ready && !q->terminating &&
                                           model_labels_match(&b->selector, &q->spec->pod_labels);
        }
        if (b->min_available.set) {
            int min = intstr_resolve(&b->min_available, expected, true, 0);
            if (healthy - 1 < min) {
                snprintf(why, whysz, "PodDisruptionBudget %s needs minAvailable %d and %d replica%s healthy", b->name,
                         min, healthy, healthy == 1 ? " is" : "s are");
                return false;
            }
        } else if (b->max_unavailable.set) {
            int max = intstr_resolve(&b->max_unavailable, expected, false, 0);
            int unavailable = expected - healthy;
            if (unavailable < 0)
                unavailable = 0;
            if (unavailable + 1 > max) {
                snprintf(why, whysz, "PodDisruptionBudget %s allows maxUnavailable %d and %d %s unavailable", b->name,
                         max, unavailable, unavailable == 1 ? "is" : "are");
                return false;
            }
        }
    }
    return true;
}

/* ---- the Deployment controller ---------------------------------------------- */

static void revision_hash(const struct model_deployment *d, unsigned nonce, char out[17])
{
    if (!nonce) {
        memcpy(out, d->template_hash, 17);
        return;
    }
    uint64_t h = 1469598103934665603ULL; /* FNV-1a over the template hash and the restart nonce */
    char buf[64];
    int n = snprintf(buf, sizeof buf, "%s/%u", d->template_hash, nonce);
    for (int i = 0; i < n; i++)
        h = (h ^ (unsigned char)buf[i]) * 1099511628211ULL;
    snprintf(out, 17, "%016llx", (unsigned long long)h);
}

static const struct model_hpa *hpa_for(const struct controller *c, const char *deployment)
{
    for (size_t i = 0; i < c->m->nhpas; i++)
        if (!strcmp(c->m->hpas[i].target, deployment))
            return &c->m->hpas[i];
    return NULL;
}

static int start_pod(struct controller *c, struct dep *dp)
{
    struct pod *p = pod_create(c, dp);
    if (!p)
        return -ENOMEM;
    if (pod_run(c, p) < 0) {
        xds_remove_proxy(c->cfg.xds, p->id);
        pod_free(p);
        return -EIO;
    }
    p->next = dp->pods;
    dp->pods = p;
    return 0;
}

static void reconcile_dep(struct controller *c, struct dep *dp)
{
    int new_n = 0, old_n = 0, ready = 0;
    for_each_pod(dp, p)
    {
        if (p->terminating)
            continue;
        bool is_new = !strcmp(p->hash, dp->hash);
        new_n += is_new;
        old_n += !is_new;
        ready += p->ready;
    }
    if (dp->deleted) {
        for_each_pod(dp, p) pod_terminate(p, "its Deployment was removed");
        return;
    }
    int desired = dp->desired;
    int surge = intstr_resolve(&dp->d->max_surge, desired, true, (desired * 25 + 99) / 100);
    int unavail = intstr_resolve(&dp->d->max_unavailable, desired, false, desired * 25 / 100);
    if (surge == 0 && unavail == 0)
        unavail = 1;
    /* 1. new revision up to desired, within the surge */
    int can = old_n ? desired + surge - (new_n + old_n) : desired - new_n;
    for (int i = 0; i < can && new_n < desired; i++, new_n++)
        if (start_pod(c, dp) < 0)
            break;
    /* 2. old revision down, keeping desired - maxUnavailable ready and the PDBs */
    int min_ready = desired - unavail;
    char why[256];
    for (int pass = 0; pass < 2; pass++) /* unready ones first: they cost nothing */
        for_each_pod(dp, p)
        {
            if (p->terminating || !strcmp(p->hash, dp->hash) || p->ready != (pass == 1))
                continue;
            if (p->ready && (ready - 1 < min_ready || !pdb_allows(c, p, why, sizeof why)))
                continue;
            ready -= p->ready;
            pod_terminate(p, "rolling update: replaced by the new revision");
        }
    /* 3. too many of the new revision (scale down): unready first, PDBs honoured */
    bool blocked = false;
    for (int pass = 0; pass < 2 && new_n > desired; pass++)
        for_each_pod(dp, p)
        {
            if (new_n <= desired)
                break;
            if (p->terminating || strcmp(p->hash, dp->hash) || p->ready != (pass == 1))
                continue;
            if (!pdb_allows(c, p, why, sizeof why)) {
                if (!dp->scale_down_blocked)
                    event(c, dp->d->name, "ScaleDownBlocked", "%s", why);
                blocked = true;
                continue;
            }
            pod_terminate(p, "scaled down");
            new_n--;
        }
    dp->scale_down_blocked = blocked;
}

static void reconcile(struct controller *c)
{
    if (c->stopping)
        return;
    for_each_dep(c, dp) reconcile_dep(c, dp);
    /* Deployments removed and gone. */
    for (struct dep **pp = &c->deps; *pp;) {
        struct dep *dp = *pp;
        if (dp->deleted && !dp->pods) {
            *pp = dp->next;
            free(dp);
        } else {
            pp = &dp->next;
        }
    }
}

/* The workloads as Prometheus sees them (kube-state-metrics' role). */
static void export_metrics(struct controller *c)
{
    for_each_dep(c, dp)
    {
        if (dp->deleted)
            continue;
        const char *name = dp->d->name;
        int ready = 0, updated = 0, restarts = dp->restarts_gone;
        for_each_pod(dp, p)
        {
            ready += p->ready && !p->terminating;
            updated += !p->terminating && !strcmp(p->hash, dp->hash);
            restarts += p->rr && !p->stopping ? rt_replica_restarts(p->rr) : p->restarts_at_stop;
        }
        metrics_gauge_set(metrics_gauge_withv(c->m_desired, &name, 1), dp->desired);
        metrics_gauge_set(metrics_gauge_withv(c->m_ready, &name, 1), ready);
        metrics_gauge_set(metrics_gauge_withv(c->m_updated, &name, 1), updated);
        if (restarts > dp->restarts_exported) {
            metrics_counter_add(metrics_counter_withv(c->m_restarts, &name, 1), (uint64_t)(restarts - dp->restarts_exported));
            dp->restarts_exported = restarts;
        }
        const struct model_hpa *h = hpa_for(c, name);
        if (h) {
            const char *v[2] = { name, h->name };
            metrics_gauge_set(metrics_gauge_withv(c->m_hpa_min, v, 2), h->min_replicas);
            metrics_gauge_set(metrics_gauge_withv(c->m_hpa_max, v, 2), h->max_replicas);
            metrics_gauge_set(metrics_gauge_withv(c->m_hpa_desired, v, 2), dp->desired);
        }
    }
}

static void register_metrics(struct controller *c)
{
    struct metrics_registry *r = metrics_default();
    static const char *const wl[] = { "workload", NULL }, *const hpa[] = { "workload", "hpa", NULL };
    struct metrics_family *f;
    metrics_register_gauge(r, "strata_workload_replicas", "Desired replicas of a Deployment.", wl, &c->m_desired);
    metrics_register_gauge(r, "strata_workload_replicas_ready", "Ready replicas of a Deployment.", wl, &c->m_ready);
    metrics_register_gauge(r, "strata_workload_replicas_updated",
                           "Replicas of a Deployment running its current revision.", wl, &c->m_updated);
    metrics_register_counter(r, "strata_workload_restarts_total", "Container restarts of a Deployment's replicas.", wl,
                             &c->m_restarts);
    metrics_register_gauge(r, "strata_hpa_min_replicas", "HorizontalPodAutoscaler lower bound.", hpa, &c->m_hpa_min);
    metrics_register_gauge(r, "strata_hpa_max_replicas", "HorizontalPodAutoscaler upper bound.", hpa, &c->m_hpa_max);
    metrics_register_gauge(r, "strata_hpa_desired_replicas", "Replicas the HorizontalPodAutoscaler asks for.", hpa,
                           &c->m_hpa_desired);
    if (metrics_register_counter(r, "strata_control_config_pushes_total", "Proxy configs pushed (one per proxy and version).",
                                 NULL, &f) == 0)
        c->m_pushes = metrics_counter_withv(f, NULL, 0);
}

static void tick(struct loop_timer *t)
{
    struct controller *c = t->data;
    reconcile(c);
    export_metrics(c);
    loop_timer_start(t, 1000);
}

/* ---- HorizontalPodAutoscaler ------------------------------------------------------ */

/* Per-second rate of a counter over at least HPA_WINDOW_MS of its samples
 * (ring of 16): -1 when there is no older sample yet. */
static double sample_rate(const struct pod *p, bool requests, double now_value, uint64_t now)
{
    unsigned cap = 16, n = requests ? p->nrq : p->ncpu, have = n < cap ? n : cap;
    int from = -1;
    for (unsigned k = 1; k <= have; k++) {
        unsigned idx = (n - k) % cap;
        from = (int)idx;
        uint64_t at = requests ? p->rq[idx].at_ms : p->cpu[idx].at_ms;
        if (now - at >= HPA_WINDOW_MS)
            break;
    }
    if (from < 0)
        return -1;
    uint64_t at = requests ? p->rq[from].at_ms : p->cpu[from].at_ms;
    double v = requests ? p->rq[from].cpu : p->cpu[from].cpu;
    return now > at ? (now_value - v) / ((double)(now - at) / 1000.0) : -1;
}

/* Requests served by a replica so far, from its sidecar's /metrics
 * (inbound strata_mesh_requests_total), or its app's own
 * (strata_http_requests_total without the probes and scrapes). */
static double count_requests(struct str text, bool sidecar)
{
    double sum = 0;
    const char *p = text.p, *end = text.p + text.n;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);
        char line[1024];
        if (len < sizeof line) {
            memcpy(line, p, len);
            line[len] = '\0';
            bool want = sidecar ? !strncmp(line, "strata_mesh_requests_total{", 27) && strstr(line, "direction=\"inbound\"")
                                : !strncmp(line, "strata_http_requests_total{", 27) && !strstr(line, "\"/healthz\"") &&
                                      !strstr(line, "\"/readyz\"") && !strstr(line, "\"/metrics\"");
            const char *sp = want ? strrchr(line, ' ') : NULL;
            if (sp)
                sum += strtod(sp + 1, NULL);
        }
        p += len + 1;
    }
    return sum;
}

static void metrics_read(int err, const struct http1_client_response *resp, void *arg)
{
    struct pod *p = arg;
    p->metrics_call = NULL;
    if (err || resp->status != 200)
        return;
    unsigned idx = p->nrq++ % 16;
    p->rq[idx].cpu = count_requests(resp->body, p->has_proxy);
    p->rq[idx].at_ms = loop_now_ms(p->c->loop);
}

static void metrics_fetch(struct controller *c, struct pod *p)
{
    if (p->metrics_call || !p->rr || p->terminating)
        return;
    struct http1_client_request rq = { .method = STR_LIT("GET"), .target = STR_LIT("/metrics"), .timeout_ms = 2000 };
    const char *addr = p->has_proxy ? p->admin_addr : p->app_addr;
    rq.host = str_from_cstr(addr);
    if (net_addr_parse(rq.host, false, &rq.addr) < 0)
        return;
    http1_client_send(c->client, &rq, metrics_read, p, &p->metrics_call);
}

static void hpa_step(struct controller *c, const struct model_hpa *h, struct dep *dp, uint64_t now)
{
    double cpu_sum = 0, rq_sum = 0;
    int ncpu = 0, nrq = 0;
    int64_t req = dp->d->containers[0].cpu_request_millis;
    for_each_pod(dp, p)
    {
        if (!p->rr || p->terminating)
            continue;
        /* Usage over at least HPA_WINDOW_MS (as metrics-server's window):
         * CPU time comes in 10 ms ticks, one sample interval alone is noise. */
        double cpu = rt_replica_cpu_seconds(p->rr), used = sample_rate(p, false, cpu, now);
        if (p->ready && used >= 0 && req > 0) {
            cpu_sum += used * 100.0 / ((double)req / 1000.0);
            ncpu++;
        }
        p->cpu[p->ncpu % 16].cpu = cpu;
        p->cpu[p->ncpu % 16].at_ms = now;
        p->ncpu++;
        if (h->requests_per_second_milli > 0) {
            double rps = p->nrq ? sample_rate(p, true, p->rq[(p->nrq - 1) % 16].cpu, p->rq[(p->nrq - 1) % 16].at_ms) : -1;
            if (p->ready && rps >= 0) {
                rq_sum += rps;
                nrq++;
            }
            metrics_fetch(c, p);
        }
    }
    /* Each metric's recommendation; the largest wins (as Kubernetes). */
    int rec = -1;
    double avg = 0;
    char what[96] = "";
    if (ncpu && h->cpu_utilization > 0) {
        avg = cpu_sum / ncpu;
        double ratio = avg / h->cpu_utilization;
        rec = ratio > 1.1 || ratio < 0.9 ? (int)(dp->desired * ratio + 0.999) : dp->desired; /* 10% tolerance */
        snprintf(what, sizeof what, "CPU %.0f%% of requests (target %d%%)", avg, h->cpu_utilization);
    }
    if (nrq && h->requests_per_second_milli > 0) {
        double per = rq_sum / nrq, target = (double)h->requests_per_second_milli / 1000.0, ratio = per / target;
        int r = ratio > 1.1 || ratio < 0.9 ? (int)(dp->desired * ratio + 0.999) : dp->desired;
        if (r > rec) {
            rec = r;
            snprintf(what, sizeof what, "%.1f requests/s per replica (target %.1f)", per, target);
        }
    }
    if (rec < 0)
        return;
    if (rec < h->min_replicas)
        rec = h->min_replicas;
    if (rec > h->max_replicas)
        rec = h->max_replicas;
    if (dp->nrecs == sizeof dp->recs / sizeof *dp->recs)
        memmove(dp->recs, dp->recs + 1, --dp->nrecs * sizeof *dp->recs);
    dp->recs[dp->nrecs++] = (struct hpa_rec){ now, rec };
    /* Stabilisation: down to the highest recommendation of the window, up
     * to the lowest of its (shorter) window. */
    int down = rec, up = rec;
    for (size_t i = 0; i < dp->nrecs; i++) {
        if (now - dp->recs[i].at_ms <= (uint64_t)h->scale_down_stabilization_s * 1000 && dp->recs[i].replicas > down)
            down = dp->recs[i].replicas;
        if (now - dp->recs[i].at_ms <= (uint64_t)h->scale_up_stabilization_s * 1000 && dp->recs[i].replicas < up)
            up = dp->recs[i].replicas;
    }
    int target = up > dp->desired ? up : down < dp->desired ? down : dp->desired;
    if (target != dp->desired) {
        event(c, dp->d->name, target > dp->desired ? "ScaledUp" : "ScaledDown",
              "HorizontalPodAutoscaler %s: %s: %d → %d replicas", h->name, what, dp->desired, target);
        dp->desired = target;
        schedule_reconcile(c);
    }
}

static void hpa_tick(struct loop_timer *t)
{
    struct controller *c = t->data;
    uint64_t now = loop_now_ms(c->loop);
    for (size_t i = 0; i < c->m->nhpas; i++)
        for_each_dep(c, dp) if (!dp->deleted && !strcmp(dp->d->name, c->m->hpas[i].target))
            hpa_step(c, &c->m->hpas[i], dp, now);
    loop_timer_start(t, c->cfg.hpa_interval_ms ? c->cfg.hpa_interval_ms : 15000);
}

/* ---- public ------------------------------------------------------------- */

static struct dep *dep_new(struct controller *c, const struct model_deployment *d)
{
    struct dep *dp = calloc(1, sizeof *dp);
    if (!dp)
        return NULL;
    dp->c = c;
    dp->d = d;
    dp->desired = d->replicas;
    const struct model_hpa *h = hpa_for(c, d->name);
    if (h && dp->desired < h->min_replicas)
        dp->desired = h->min_replicas;
    if (h && dp->desired > h->max_replicas)
        dp->desired = h->max_replicas;
    revision_hash(d, 0, dp->hash);
    return dp;
}

static struct dep *dep_find(const struct controller *c, const char *name)
{
    for_each_dep(c, dp) if (!dp->deleted && !strcmp(dp->d->name, name)) return dp;
    return NULL;
}

struct controller *controller_new(const struct controller_config *cfg, struct model *m, json_t *secrets)
{
    struct controller *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->cfg = *cfg;
    c->m = m;
    c->secrets = secrets;
    struct dep **tail = &c->deps;
    for (size_t i = 0; i < m->ndeployments; i++) {
        struct dep *dp = dep_new(c, &m->deployments[i]);
        if (!dp) {
            controller_free(c);
            return NULL;
        }
        *tail = dp;
        tail = &dp->next;
    }
    return c;
}

int controller_start(struct controller *c, struct loop *l, struct http1_client *client)
{
    c->loop = l;
    c->client = client;
    char logs[PATH_MAX];
    snprintf(logs, sizeof logs, "%s/logs", c->cfg.state_dir);
    struct rt_config rc = { .log_dir = logs, .backoff_base_ms = c->cfg.backoff_base_ms };
    c->rt = rt_new(l, client, &rc);
    if (!c->rt)
        return -ENOMEM;
    for_each_dep(c, dp) for_each_pod(dp, p) loop_timer_init(l, &p->term_timer, pod_term_check, p);
    register_metrics(c);
    loop_timer_init(l, &c->tick, tick, c);
    loop_timer_init(l, &c->hpa_timer, hpa_tick, c);
    loop_timer_start(&c->tick, 0);
    loop_timer_start(&c->hpa_timer, c->cfg.hpa_interval_ms ? c->cfg.hpa_interval_ms : 15000);
    return 0;
}

void controller_apply(struct controller *c, struct model *m, json_t *secrets)
{
    struct old_model *om = calloc(1, sizeof *om);
    if (om) { /* pods of older revisions still point into it */
        om->m = c->m;
        om->secrets = c->secrets;
        om->next = c->old_models;
        c->old_models = om;
    } else {
        json_decref(c->secrets); /* keep the model: pods point into it */
    }
    c->m = m;
    c->secrets = secrets;
    for_each_dep(c, dp)
    {
        if (dp->deleted)
            continue;
        const struct model_deployment *nd = model_deployment(m, dp->d->name);
        if (!nd) {
            dp->deleted = true;
            event(c, dp->d->name, "Deleted", "no longer in the manifests: stopping its replicas");
            continue;
        }
        if (strcmp(nd->template_hash, dp->d->template_hash)) {
            dp->prev = dp->d;
            dp->prev_nonce = dp->nonce;
            memcpy(dp->prev_hash, dp->hash, sizeof dp->hash);
            dp->nonce = 0;
            revision_hash(nd, 0, dp->hash);
            event(c, nd->name, "RollingUpdate", "template changed: rolling out revision %s", dp->hash);
        }
        dp->d = nd;
        const struct model_hpa *h = hpa_for(c, nd->name);
        if (!h) {
            if (dp->desired != nd->replicas)
                event(c, nd->name, "Scaled", "%d → %d replicas", dp->desired, nd->replicas);
            dp->desired = nd->replicas;
        } else {
            if (dp->desired < h->min_replicas)
                dp->desired = h->min_replicas;
            if (dp->desired > h->max_replicas)
                dp->desired = h->max_replicas;
        }
    }
    for (size_t i = 0; i < m->ndeployments; i++) {
        if (dep_find(c, m->deployments[i].name))
            continue;
        struct dep *dp = dep_new(c, &m->deployments[i]);
        if (!dp)
            continue;
        struct dep **tail = &c->deps;
        while (*tail)
            tail = &(*tail)->next;
        *tail = dp;
        event(c, dp->d->name, "Created", "new Deployment");
    }
    changed(c);
    schedule_reconcile(c);
}

const json_t *controller_secrets(const struct controller *c) { return c->secrets; }

int controller_scale(struct controller *c, const char *deployment, int replicas, char *err, size_t errsz)
{
    struct dep *dp = dep_find(c, deployment);
    if (!dp) {
        snprintf(err, errsz, "no Deployment named \"%s\"", deployment);
        return -ENOENT;
    }
    if (replicas < 0 || replicas > 1000) {
        snprintf(err, errsz, "replicas: expected 0-1000, got %d", replicas);
        return -EINVAL;
    }
    const struct model_hpa *h = hpa_for(c, deployment);
    if (h && (replicas < h->min_replicas || replicas > h->max_replicas)) {
        snprintf(err, errsz, "HorizontalPodAutoscaler %s keeps %s between %d and %d replicas", h->name, deployment,
                 h->min_replicas, h->max_replicas);
        return -EINVAL;
    }
    /* A budget that the new count could never satisfy would block the
     * scale-down forever: refuse it now. */
    for (size_t i = 0; replicas < dp->desired && i < c->m->npdbs; i++) {
        const struct model_pdb *b = &c->m->pdbs[i];
        if (!b->min_available.set || !model_labels_match(&b->selector, &dp->d->pod_labels))
            continue;
        int expected = 0;
        for_each_dep(c, other) if (!other->deleted && model_labels_match(&b->selector, &other->d->pod_labels))
            expected += other == dp ? replicas : other->desired;
        int min = intstr_resolve(&b->min_available, expected, true, 0);
        if (min > expected) {
            snprintf(err, errsz, "PodDisruptionBudget %s needs minAvailable %d: %s at %d replicas leaves %d", b->name,
                     min, deployment, replicas, expected);
            return -EBUSY;
        }
    }
    event(c, deployment, "Scaled", "%d → %d replicas (strata scale)", dp->desired, replicas);
    dp->desired = replicas;
    schedule_reconcile(c);
    return 0;
}

int controller_rollout_restart(struct controller *c, const char *deployment, char *err, size_t errsz)
{
    struct dep *dp = dep_find(c, deployment);
    if (!dp) {
        snprintf(err, errsz, "no Deployment named \"%s\"", deployment);
        return -ENOENT;
    }
    dp->prev = dp->d;
    dp->prev_nonce = dp->nonce;
    memcpy(dp->prev_hash, dp->hash, sizeof dp->hash);
    dp->nonce++;
    revision_hash(dp->d, dp->nonce, dp->hash);
    event(c, deployment, "RollingUpdate", "restart: rolling out revision %s", dp->hash);
    schedule_reconcile(c);
    return 0;
}

int controller_rollout_undo(struct controller *c, const char *deployment, char *err, size_t errsz)
{
    struct dep *dp = dep_find(c, deployment);
    if (!dp) {
        snprintf(err, errsz, "no Deployment named \"%s\"", deployment);
        return -ENOENT;
    }
    if (!dp->prev) {
        snprintf(err, errsz, "%s has no previous revision", deployment);
        return -EINVAL;
    }
    const struct model_deployment *d = dp->d;
    unsigned nonce = dp->nonce;
    char hash[17];
    memcpy(hash, dp->hash, sizeof hash);
    dp->d = dp->prev;
    dp->nonce = dp->prev_nonce;
    memcpy(dp->hash, dp->prev_hash, sizeof hash);
    dp->prev = d;
    dp->prev_nonce = nonce;
    memcpy(dp->prev_hash, hash, sizeof hash);
    event(c, deployment, "RollingUpdate", "undo: rolling back to revision %s", dp->hash);
    schedule_reconcile(c);
    return 0;
}

int controller_drain(struct controller *c, const char *name, int *evicted, int *blocked, char *err, size_t errsz)
{
    *evicted = *blocked = 0;
    struct dep *whole = dep_find(c, name);
    bool found = false;
    err[0] = '\0';
    for_each_dep(c, dp) for_each_pod(dp, p)
    {
        if (p->terminating || (whole ? dp != whole : strcmp(p->id, name)))
            continue;
        found = true;
        char why[256];
        if (!pdb_allows(c, p, why, sizeof why)) {
            (*blocked)++;
            snprintf(err, errsz, "cannot evict %s: %s", p->id, why);
            event(c, p->id, "EvictionBlocked", "%s", why);
            continue;
        }
        (*evicted)++;
        pod_terminate(p, "evicted (strata drain)");
    }
    if (!found) {
        snprintf(err, errsz, "no replica or Deployment named \"%s\"", name);
        return -ENOENT;
    }
    schedule_reconcile(c);
    return *blocked ? -EBUSY : 0;
}

/* Ready for `strata up`: a replica without a readiness probe is ready as
 * soon as its app starts, so it must also have stayed up a second (a
 * crash-looping one flips ready between two polls otherwise). */
static bool settled_ready(const struct controller *c, const struct pod *p)
{
    if (!p->ready || p->terminating)
        return false;
    if (p->spec->is_gateway || p->spec->containers[0].readiness.set)
        return true;
    return loop_now_ms(c->loop) - p->ready_since_ms >= 1000;
}

bool controller_ready(const struct controller *c)
{
    for_each_dep(c, dp)
    {
        if (dp->deleted)
            continue;
        int ready = 0;
        for_each_pod(dp, p)
        {
            ready += settled_ready(c, p) && !strcmp(p->hash, dp->hash);
            /* Ready means routable: every live proxy runs its latest
             * config (the endpoints that just turned ready included). */
            if (p->has_proxy && p->rr && !p->terminating && acked_seq(c, p) < p->config_seq)
                return false;
        }
        if (ready < dp->desired)
            return false;
    }
    return !c->push_pending;
}

json_t *controller_status(const struct controller *c)
{
    json_t *wl = json_array();
    for_each_dep(c, dp)
    {
        json_t *pods = json_array();
        int ready = 0, restarts = dp->restarts_gone, updated = 0, old = 0;
        for_each_pod(dp, p)
        {
            int r = p->rr ? rt_replica_restarts(p->rr) : 0;
            bool is_new = !strcmp(p->hash, dp->hash);
            restarts += r;
            ready += p->ready && !p->terminating;
            updated += is_new && !p->terminating;
            old += !is_new && !p->terminating;
            json_t *pj = json_pack("{s:s, s:b, s:s, s:i, s:s, s:s, s:I}", "name", p->id, "ready",
                                   p->ready && !p->terminating, "phase",
                                   p->terminating ? "Terminating" : p->rr ? rt_replica_phase(p->rr) : "Pending",
                                   "restarts", r, "version", p->hash, "address", p->app_addr, "started",
                                   (json_int_t)p->started);
            if (p->rr) {
                json_object_set_new(pj, "pid", json_integer(rt_replica_pid(p->rr, p->spec->is_gateway ? "proxy" : "app")));
                if (p->has_proxy && !p->spec->is_gateway)
                    json_object_set_new(pj, "proxy_pid", json_integer(rt_replica_pid(p->rr, "proxy")));
            }
            json_array_append_new(pods, pj);
        }
        json_t *w = json_pack("{s:s, s:s, s:i, s:i, s:i, s:s, s:b, s:o}", "name", dp->d->name, "kind", "Deployment",
                              "replicas", dp->desired, "ready", ready, "restarts", restarts, "version", dp->hash,
                              "gateway", dp->d->is_gateway, "pods", pods);
        json_object_set_new(w, "rollout", json_pack("{s:b, s:i, s:i}", "complete", old == 0 && updated == dp->desired,
                                                    "updated", updated, "old", old));
        if (dp->deleted)
            json_object_set_new(w, "deleted", json_true());
        json_array_append_new(wl, w);
    }
    return json_pack("{s:b, s:s, s:o}", "ready", controller_ready(c), "version", c->m->digest, "workloads", wl);
}

static void sd_add(json_t *a, const char *addr, const char *job, const struct pod *p)
{
    const char *svc = model_label(&p->spec->pod_labels, "app");
    json_array_append_new(a, json_pack("{s:[s], s:{s:s, s:s, s:s, s:s, s:s}}", "targets", addr, "labels", "job", job,
                                       "workload", p->spec->name, "replica", p->id, "version", p->hash, "service",
                                       svc ? svc : p->spec->name));
}

json_t *controller_sd_targets(const struct controller *c)
{
    json_t *a = json_array();
    for_each_dep(c, dp) for_each_pod(dp, p)
    {
        if (!p->rr || p->stopping)
            continue;
        if (p->spec->is_gateway) {
            sd_add(a, p->admin_addr, "gateway", p);
            continue;
        }
        sd_add(a, p->app_addr, "app", p);
        if (p->has_proxy)
            sd_add(a, p->admin_addr, "sidecar", p);
    }
    return a;
}

json_t *controller_events(const struct controller *c)
{
    json_t *a = json_array();
    size_t start = (c->event_next + MAX_EVENTS - c->nevents) % MAX_EVENTS;
    for (size_t i = 0; i < c->nevents; i++) {
        const struct event *e = &c->events[(start + i) % MAX_EVENTS];
        json_array_append_new(a, json_pack("{s:I, s:s, s:s, s:s}", "time", (json_int_t)e->at, "object", e->object,
                                           "reason", e->reason, "message", e->message));
    }
    return a;
}

void controller_stop_all(struct controller *c, void (*done)(void *arg), void *arg)
{
    c->stopping = true;
    c->stopped = done;
    c->stopped_arg = arg;
    loop_timer_stop(&c->tick);
    loop_timer_stop(&c->hpa_timer);
    loop_defer_cancel(c->loop, &c->reconcile_defer);
    c->reconcile_pending = false;
    c->stops_pending = 1;
    for_each_dep(c, dp) for_each_pod(dp, p)
    {
        c->stops_pending++;
        if (!p->terminating)
            pod_terminate(p, "the platform is stopping");
        else if (p->stopping && !p->rr)
            c->stops_pending--;
    }
    if (--c->stops_pending == 0 && done)
        done(arg);
}

void controller_free(struct controller *c)
{
    if (!c)
        return;
    if (c->loop) {
        loop_timer_stop(&c->tick);
        loop_timer_stop(&c->hpa_timer);
        loop_defer_cancel(c->loop, &c->push_defer);
        loop_defer_cancel(c->loop, &c->reconcile_defer);
    }
    while (c->deps) {
        struct dep *dp = c->deps;
        c->deps = dp->next;
        while (dp->pods) {
            struct pod *p = dp->pods;
            dp->pods = p->next;
            pod_free(p);
        }
        free(dp);
    }
    if (c->rt)
        rt_free(c->rt);
    while (c->old_models) {
        struct old_model *om = c->old_models;
        c->old_models = om->next;
        json_decref(om->secrets);
        model_free(om->m);
        free(om);
    }
    json_decref(c->secrets);
    model_free(c->m);
    free(c);
}
