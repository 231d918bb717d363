/* strata-control — the control plane and local runtime (docs/runtime.md).
 *
 *   strata-control -f DIR --state DIR [--admin ADDR] [--gateway-http ADDR] [--gateway-https ADDR]
 *                  [--prometheus-port N] [--alertmanager-port N] [--images DIR] [--backoff-base-ms N]
 *                  [--hpa-interval-ms N]
 *
 * Start: manifests loaded and validated (nothing starts on an error) → the
 * data layer (PostgreSQL, Redis, NATS, Prometheus, Alertmanager) → secrets
 * (generated ones made once, databases and credentials per Database) → the
 * CA → the admin API and the proxy protocol on ADDR → every Deployment's
 * replicas. `strata up` runs this in the background and polls /v1/status.
 * SIGTERM (or POST /v1/shutdown): replicas out of every proxy's endpoints,
 * stopped gracefully, then the data layer, then the API. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "control/admin.h"
#include "control/alerts.h"
#include "control/ca.h"
#include "control/console.h"
#include "control/controller.h"
#include "control/datalayer.h"
#include "control/images.h"
#include "control/logsearch.h"
#include "control/logship.h"
#include "control/model.h"
#include "control/observability.h"
#include "control/secrets.h"
#include "control/traces.h"
#include "control/xds.h"
#include "core/log.h"
#include "core/service.h"

struct opts {
    const char *manifests, *state, *admin, *gw_http, *gw_https, *images;
    int prometheus_port, alertmanager_port;
    long backoff_base_ms;
    long hpa_interval_ms;
};

struct control {
    struct opts o;
    char state[PATH_MAX];
    char token[65];
    struct service *svc;
    struct datalayer *dl;
    struct ca *ca;
    struct xds *xds;
    struct controller *ctl;
    struct alerts *alerts;
    struct traces *traces;
    struct admin_auth auth;
    const char *loki_url; /* LOKI_URL, checked at start; NULL: no shipping */
    struct logship *logship;
    char admin_url[128];
    char ca_file[PATH_MAX];
    char rules_dir[PATH_MAX + 48], am_file[PATH_MAX + 64], token_file[PATH_MAX + 16];
};

static void usage(FILE *f)
{
    fputs("usage: strata-control -f DIR --state DIR [--admin 127.0.0.1:9900]\n"
          "                      [--gateway-http 127.0.0.1:8080] [--gateway-https 127.0.0.1:8443]\n"
          "                      [--prometheus-port 9090] [--alertmanager-port 9093] (0: not started)\n"
          "                      [--images DIR] [--backoff-base-ms 10000] [--hpa-interval-ms 15000]\n"
          "The control plane and local runtime; usually started by `strata up` (docs/runtime.md).\n",
          f);
}

static int parse_port(const char *flag, const char *v, int *out)
{
    char *end;
    long n = strtol(v, &end, 10);
    if (!*v || *end || n < 0 || n > 65535) {
        fprintf(stderr, "strata-control: %s: expected a port 0-65535, got \"%s\"\n", flag, v);
        return -1;
    }
    *out = (int)n;
    return 0;
}

static int parse_args(int argc, char **argv, struct opts *o)
{
    *o = (struct opts){ .admin = "127.0.0.1:9900", .gw_http = "127.0.0.1:8080", .gw_https = "127.0.0.1:8443",
                        .prometheus_port = 9090, .alertmanager_port = 9093, .backoff_base_ms = 10000,
                        .hpa_interval_ms = 15000 };
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            exit(0);
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "strata-control: %s: needs a value (or unknown flag)\n", a);
            return -1;
        }
        const char *v = argv[++i];
        if (!strcmp(a, "-f") || !strcmp(a, "--manifests"))
            o->manifests = v;
        else if (!strcmp(a, "--state"))
            o->state = v;
        else if (!strcmp(a, "--admin"))
            o->admin = v;
        else if (!strcmp(a, "--gateway-http"))
            o->gw_http = v;
        else if (!strcmp(a, "--gateway-https"))
            o->gw_https = v;
        else if (!strcmp(a, "--images"))
            o->images = v;
        else if (!strcmp(a, "--prometheus-port")) {
            if (parse_port(a, v, &o->prometheus_port) < 0)
                return -1;
        } else if (!strcmp(a, "--alertmanager-port")) {
            if (parse_port(a, v, &o->alertmanager_port) < 0)
                return -1;
        } else if (!strcmp(a, "--backoff-base-ms")) {
            char *end;
            o->backoff_base_ms = strtol(v, &end, 10);
            if (!*v || *end || o->backoff_base_ms < 1 || o->backoff_base_ms > 600000) {
                fprintf(stderr, "strata-control: --backoff-base-ms: expected 1-600000, got \"%s\"\n", v);
                return -1;
            }
        } else if (!strcmp(a, "--hpa-interval-ms")) {
            char *end;
            o->hpa_interval_ms = strtol(v, &end, 10);
            if (!*v || *end || o->hpa_interval_ms < 100 || o->hpa_interval_ms > 600000) {
                fprintf(stderr, "strata-control: --hpa-interval-ms: expected 100-600000, got \"%s\"\n", v);
                return -1;
            }
        } else {
            fprintf(stderr, "strata-control: unknown flag %s (see --help)\n", a);
            return -1;
        }
    }
    if (!o->manifests || !o->state) {
        fprintf(stderr, "strata-control: %s is required (see --help)\n", o->manifests ? "--state" : "-f DIR");
        return -1;
    }
    return 0;
}

/* ---- state directory ---------------------------------------------------- */

static int prepare_state(struct control *c)
{
    if (mkdir(c->o.state, 0700) < 0 && errno != EEXIST) {
        fprintf(stderr, "strata-control: --state %s: %s\n", c->o.state, strerror(errno));
        return -1;
    }
    if (!realpath(c->o.state, c->state)) {
        fprintf(stderr, "strata-control: --state %s: %s\n", c->o.state, strerror(errno));
        return -1;
    }
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/control.lock", c->state);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0 || flock(fd, LOCK_EX | LOCK_NB) < 0) {
        fprintf(stderr, "strata-control: %s: %s\n", path,
                errno == EWOULDBLOCK ? "another control plane runs on this state directory" : strerror(errno));
        return -1;
    }
    /* fd stays open (and locked) for the life of the process. */
    static const char *const dirs[] = { "pods", "logs", "secrets", "prometheus", "alertmanager" };
    for (size_t i = 0; i < sizeof dirs / sizeof *dirs; i++) {
        snprintf(path, sizeof path, "%s/%s", c->state, dirs[i]);
        if (mkdir(path, 0700) < 0 && errno != EEXIST) {
            fprintf(stderr, "strata-control: %s: %s\n", path, strerror(errno));
            return -1;
        }
    }
    /* A fresh admin token each start: a stale one must stop working. */
    unsigned char b[32];
    if (RAND_bytes(b, sizeof b) != 1)
        return -1;
    for (size_t i = 0; i < sizeof b; i++)
        snprintf(c->token + 2 * i, 3, "%02x", b[i]);
    snprintf(path, sizeof path, "%s/admin.token", c->state);
    if (secrets_write_file(path, c->token, strlen(c->token), 0600) < 0) {
        fprintf(stderr, "strata-control: %s: %s\n", path, strerror(errno));
        return -1;
    }
    return 0;
}

static int write_text(const char *dir, const char *name, const char *text)
{
    char path[PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return secrets_write_file(path, text, strlen(text), 0644);
}

/* Prometheus scrapes the control plane; service discovery for the replicas
 * arrives with the observability issue. */
static int monitoring_configs(struct control *c, char *prom, size_t promsz, char *am, size_t amsz)
{
    char dir[PATH_MAX + 32], text[4096 + PATH_MAX];
    snprintf(dir, sizeof dir, "%s/prometheus", c->state);
    char rules[PATH_MAX + 48];
    snprintf(rules, sizeof rules, "%s/rules", dir);
    if (mkdir(rules, 0700) < 0 && errno != EEXIST)
        return -1;
    /* Every replica through HTTP service discovery (GET /v1/sd): the job
     * label comes from the target (app, sidecar, gateway). "type: Bearer"
     * explicitly: Prometheus 2.42's http_sd sends the bare credential
     * without it. */
    snprintf(text, sizeof text,
             "global:\n  scrape_interval: 5s\n  evaluation_interval: 5s\n"
             "rule_files:\n  - rules/*.yml\n"
             "alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['127.0.0.1:%d']\n"
             "scrape_configs:\n"
             "  - job_name: strata-control\n    static_configs:\n      - targets: ['%s']\n"
             "  - job_name: strata\n    http_sd_configs:\n      - url: http://%s/v1/sd\n        refresh_interval: 5s\n"
             "        authorization:\n          type: Bearer\n          credentials_file: %s/admin.token\n"
             "    relabel_configs:\n      - source_labels: [job]\n        target_label: job\n",
             c->o.alertmanager_port, c->o.admin, c->o.admin, c->state);
    if (write_text(dir, "prometheus.yml", text) < 0)
        return -1;
    snprintf(prom, promsz, "%s/prometheus.yml", dir);
    snprintf(dir, sizeof dir, "%s/alertmanager", c->state);
    if (write_text(dir, "alertmanager.yml", "route:\n  receiver: control\nreceivers:\n  - name: control\n") < 0)
        return -1;
    snprintf(am, amsz, "%s/alertmanager.yml", dir);
    return 0;
}

/* Every Secret the manifests name, with its values: literal, generated, or
 * made by the data layer for a Database. */
static json_t *resolve_secrets(struct control *c, const struct model *m)
{
    json_t *all = json_object();
    char err[512];
    for (size_t i = 0; i < m->nsecrets; i++) {
        const struct model_secret *s = &m->secrets[i];
        if (s->generated)
            continue;
        json_t *o = json_object();
        for (size_t j = 0; j < s->ndata; j++)
            json_object_set_new(o, s->data[j].key, json_string(s->data[j].value));
        json_object_set_new(all, s->name, o);
    }
    for (size_t i = 0; i < m->ngenerated_secrets; i++) {
        json_t *o;
        if (secrets_generated(c->state, &m->generated_secrets[i], &o, err, sizeof err) < 0) {
            fprintf(stderr, "strata-control: %s\n", err);
            json_decref(all);
            return NULL;
        }
        json_object_set_new(all, m->generated_secrets[i].name, o);
    }
    for (size_t i = 0; i < m->ndatabases; i++) {
        const struct model_database *d = &m->databases[i];
        json_t *o = json_object();
        if (d->engine == MODEL_DB_POSTGRESQL) {
            char name[64], url[512];
            size_t n = 0;
            for (const char *p = d->name; *p && n < sizeof name - 1; p++)
                name[n++] = (*p == '-' || *p == '.') ? '_' : *p;
            name[n] = '\0';
            if (datalayer_pg_database(c->dl, name, url, sizeof url, err, sizeof err) < 0) {
                fprintf(stderr, "strata-control: Database %s: %s\n", d->name, err);
                json_decref(o);
                json_decref(all);
                return NULL;
            }
            /* postgresql://USER:PASS@HOST:PORT/DB */
            char user[128] = "", pass[256] = "", host[64] = "", port[16] = "", db[128] = "";
            sscanf(url, "postgresql://%127[^:]:%255[^@]@%63[^:]:%15[^/]/%127s", user, pass, host, port, db);
            json_object_set_new(o, "url", json_string(url));
            json_object_set_new(o, "username", json_string(user));
            json_object_set_new(o, "password", json_string(pass));
            json_object_set_new(o, "host", json_string(host));
            json_object_set_new(o, "port", json_string(port));
            json_object_set_new(o, "database", json_string(db));
        } else {
            json_object_set_new(o, "url", json_string(d->engine == MODEL_DB_REDIS ? datalayer_redis_url(c->dl)
                                                                                : datalayer_nats_url(c->dl)));
        }
        json_object_set_new(all, d->secret_name, o);
    }
    return all;
}

static void report_error(const char *msg, void *arg)
{
    (void)arg;
    fprintf(stderr, "error: %s\n", msg);
}

static void collect_error(const char *msg, void *arg) { json_array_append_new(arg, json_string(msg)); }

/* ---- admin API ---------------------------------------------------------- */

static bool authorized(struct service_req *r, struct control *c)
{
    struct str h = service_req_header(r, "Authorization");
    size_t tl = strlen(c->token);
    if (h.n == 7 + tl && !strncmp(h.p, "Bearer ", 7) && !CRYPTO_memcmp(h.p + 7, c->token, tl))
        return true;
    service_req_add_header(r, "WWW-Authenticate", "Bearer");
    service_reply_error(r, 401, "unauthorized", "the admin API needs Authorization: Bearer <STATE/admin.token>");
    return false;
}

static bool auth_check(struct service_req *r, void *arg) { return authorized(r, arg); }

static json_t *endpoints_json(struct control *c)
{
    char https[160], http[160], logs[PATH_MAX + 8], prom[64] = "", am[64] = "";
    snprintf(http, sizeof http, "http://%s", c->o.gw_http);
    snprintf(https, sizeof https, "https://%s", c->o.gw_https);
    snprintf(logs, sizeof logs, "%s/logs", c->state);
    json_t *e = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "gateway_http", http, "gateway_https", https,
                          "admin", c->admin_url, "console", c->admin_url, "ca_file", c->ca_file, "state_dir",
                          c->state, "logs", logs, "redis", datalayer_redis_url(c->dl));
    json_object_set_new(e, "nats", json_string(datalayer_nats_url(c->dl)));
    if (datalayer_prometheus_url(c->dl))
        snprintf(prom, sizeof prom, "%s", datalayer_prometheus_url(c->dl));
    if (datalayer_alertmanager_url(c->dl))
        snprintf(am, sizeof am, "%s", datalayer_alertmanager_url(c->dl));
    json_object_set_new(e, "prometheus", *prom ? json_string(prom) : json_null());
    json_object_set_new(e, "alertmanager", *am ? json_string(am) : json_null());
    return e;
}

static void h_status(struct service_req *r, void *arg)
{
    struct control *c = arg;
    if (!authorized(r, c))
        return;
    json_t *st = controller_status(c->ctl);
    json_object_set_new(st, "endpoints", endpoints_json(c));
    json_object_set_new(st, "pid", json_integer(getpid()));
    service_reply_json(r, 200, st);
}

static void h_events(struct service_req *r, void *arg)
{
    struct control *c = arg;
    if (!authorized(r, c))
        return;
    service_reply_json(r, 200, json_pack("{s:o}", "events", controller_events(c->ctl)));
}

/* Prometheus' http_sd_configs (Bearer token from the state directory). */
static void h_sd(struct service_req *r, void *arg)
{
    struct control *c = arg;
    if (!authorized(r, c))
        return;
    service_reply_json(r, 200, controller_sd_targets(c->ctl));
}

static void h_shutdown(struct service_req *r, void *arg)
{
    struct control *c = arg;
    if (!authorized(r, c))
        return;
    service_reply_json(r, 202, json_pack("{s:s}", "status", "shutting down"));
    service_shutdown(c->svc);
}

static json_t *strings_json(char **v, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, json_string(v[i]));
    return a;
}

/* 422 invalid_manifests with every error (steals errors and warnings). */
static void reply_invalid(struct service_req *r, json_t *errors, json_t *warnings)
{
    const char *first = json_string_value(json_array_get(errors, 0));
    json_t *e = json_pack("{s:{s:s, s:s, s:s}, s:o, s:o}", "error", "code", "invalid_manifests", "message",
                          first ? first : "invalid manifests", "request_id", service_req_id(r), "errors", errors,
                          "warnings", warnings);
    service_reply_json(r, 422, e);
}

/* POST /v1/apply {"dir": "/abs/path", "dry_run": false}: the same checks as
 * at start; any error → 422 with every message, and nothing changes. */
static void h_apply(struct service_req *r, void *arg)
{
    struct control *c = arg;
    if (!authorized(r, c))
        return;
    json_t *body;
    if (service_req_json(r, 0, &body) < 0)
        return;
    const char *dir_in = json_string_value(json_object_get(body, "dir"));
    bool dry = json_is_true(json_object_get(body, "dry_run"));
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", dir_in ? dir_in : "");
    if (!dir_in || dir[0] != '/' || strlen(dir_in) >= sizeof dir) {
        json_decref(body);
        service_reply_error(r, 422, "invalid_request", "dir: an absolute path to a directory of manifests is required");
        return;
    }
    struct model *m = NULL;
    struct model_diag d = { 0 };
    int rc = model_load_dir(dir, &m, &d);
    json_t *warnings = strings_json(d.warnings, d.nwarnings);
    if (rc < 0) {
        json_t *errors = strings_json(d.errors, d.nerrors);
        if (!d.nerrors)
            json_array_append_new(errors, json_string(strerror(-rc)));
        model_diag_free(&d);
        json_decref(body);
        reply_invalid(r, errors, warnings);
        return;
    }
    model_diag_free(&d);
    json_decref(body);
    json_t *imgerr = json_array();
    if (image_check_model(m, c->o.images, NULL, collect_error, imgerr)) {
        model_free(m);
        reply_invalid(r, imgerr, warnings);
        return;
    }
    json_decref(imgerr);
    if (dry) {
        model_free(m);
        service_reply_json(r, 200, json_pack("{s:b, s:o}", "dry_run", 1, "warnings", warnings));
        return;
    }
    json_t *secrets = resolve_secrets(c, m);
    if (!secrets) {
        model_free(m);
        json_decref(warnings);
        service_reply_error(r, 503, "secrets_unavailable", "the generated secrets or databases could not be made (see the control plane's log)");
        return;
    }
    controller_apply(c->ctl, m, secrets);
    /* The rules of deploy/observability too: Prometheus rereads them. */
    char err[1024];
    if (observability_install(dir, c->rules_dir, c->am_file, c->o.admin, c->token_file, err, sizeof err) < 0)
        log_warn("observability rules not reinstalled", LOG_STR("error", err));
    else
        datalayer_prometheus_reload(c->dl);
    service_reply_json(r, 200, json_pack("{s:b, s:o}", "applied", 1, "warnings", warnings));
}

static void reply_op(struct service_req *r, int rc, const char *err, json_t *ok)
{
    if (rc == 0) {
        service_reply_json(r, 200, ok);
        return;
    }
    json_decref(ok);
    int status = rc == -ENOENT ? 404 : rc == -EBUSY ? 429 : 422;
    service_reply_error(r, status, rc == -ENOENT ? "not_found" : rc == -EBUSY ? "disruption_budget" : "invalid_request",
                        err);
}

static char *param(struct service_req *r, const char *name, char *buf, size_t n)
{
    struct str v = service_req_param(r, name);
    snprintf(buf, n, "%.*s", (int)v.n, v.p);
    return buf;
}

static void h_scale(struct service_req *r, void *arg)
{
    struct control *c = arg;
    if (!authorized(r, c))
        return;
    json_t *body;
    if (service_req_json(r, 0, &body) < 0)
        return;
    json_t *n = json_object_get(body, "replicas");
    char name[256], err[512];
    param(r, "name", name, sizeof name);
    if (!json_is_integer(n)) {
        json_decref(body);
        service_reply_error(r, 422, "invalid_request", "replicas: an integer is required");
        return;
    }
    int rc = controller_scale(c->ctl, name, (int)json_integer_value(n), err, sizeof err);
    reply_op(r, rc, err, json_pack("{s:s, s:I}", "name", name, "replicas", json_integer_value(n)));
    json_decref(body);
}

static void h_rollout(struct service_req *r, void *arg)
{
    struct control *c = arg;
    if (!authorized(r, c))
        return;
    char name[256], action[32], err[512];
    param(r, "name", name, sizeof name);
    param(r, "action", action, sizeof action);
    int rc;
    if (!strcmp(action, "restart"))
        rc = controller_rollout_restart(c->ctl, name, err, sizeof err);
    else if (!strcmp(action, "undo"))
        rc = controller_rollout_undo(c->ctl, name, err, sizeof err);
    else {
        service_reply_error(r, 404, "not_found", "rollout actions: restart, undo");
        return;
    }
    reply_op(r, rc, err, json_pack("{s:s, s:s}", "name", name, "action", action));
}

static void h_drain(struct service_req *r, void *arg)
{
    struct control *c = arg;
    if (!authorized(r, c))
        return;
    char name[256], err[512];
    param(r, "name", name, sizeof name);
    int evicted, blocked;
    int rc = controller_drain(c->ctl, name, &evicted, &blocked, err, sizeof err);
    if (rc == -EBUSY) { /* 429 with the counts: some may have gone */
        service_reply_json(r, 429, json_pack("{s:{s:s, s:s, s:s}, s:i, s:i}", "error", "code", "disruption_budget",
                                             "message", err, "request_id", service_req_id(r), "evicted", evicted,
                                             "blocked", blocked));
        return;
    }
    reply_op(r, rc, err, json_pack("{s:s, s:i, s:i}", "name", name, "evicted", evicted, "blocked", blocked));
}

static int ctl_ready(void *arg, char *reason, size_t n)
{
    struct control *c = arg;
    if (c->ctl && controller_ready(c->ctl))
        return 0;
    snprintf(reason, n, "workloads not all ready");
    return -1;
}

/* ---- lifecycle ---------------------------------------------------------- */

static struct http1_client *worker_client;

static void worker_start(struct loop *l, int worker, void *arg)
{
    struct control *c = arg;
    if (worker != 0)
        return;
    worker_client = http1_client_new(l, NULL);
    if (!worker_client || controller_start(c->ctl, l, worker_client) < 0) {
        log_error("cannot start the controller");
        service_shutdown(c->svc);
        return;
    }
    if (c->loki_url) {
        char logs[PATH_MAX + 8], pos[PATH_MAX + 16];
        snprintf(logs, sizeof logs, "%s/logs", c->state);
        snprintf(pos, sizeof pos, "%s/logship.json", c->state);
        struct logship_config lc = { .state_file = pos };
        if (!(c->logship = logship_start(l, worker_client, logs, c->loki_url, &lc)))
            log_error("cannot start the Loki shipper");
    }
}

static void worker_stop(struct loop *l, int worker, void *arg)
{
    struct control *c = arg;
    (void)l;
    if (worker != 0)
        return;
    controller_free(c->ctl);
    c->ctl = NULL;
    logship_stop(c->logship);
    c->logship = NULL;
    http1_client_free(worker_client);
    worker_client = NULL;
}

static void all_stopped(void *arg)
{
    struct control *c = arg;
    log_info("every replica stopped; stopping the data layer");
    datalayer_stop(c->dl);
    c->dl = NULL;
    service_prestop_done(c->svc);
}

static void prestop(struct service *s, void *arg)
{
    struct control *c = arg;
    (void)s;
    log_info("stopping every replica");
    controller_stop_all(c->ctl, all_stopped, c);
}

static int write_control_json(struct control *c)
{
    json_t *j = json_pack("{s:i, s:s, s:s, s:s}", "pid", getpid(), "admin", c->admin_url, "manifests",
                          c->o.manifests, "ca_file", c->ca_file);
    char *text = json_dumps(j, JSON_INDENT(2));
    json_decref(j);
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/control.json", c->state);
    int rc = text ? secrets_write_file(path, text, strlen(text), 0600) : -ENOMEM;
    free(text);
    return rc;
}

static void default_images(struct control *c, char *out, size_t n, const char *argv0)
{
    (void)c;
    char self[PATH_MAX];
    ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
    if (len < 0) {
        snprintf(out, n, "%s", argv0);
        return;
    }
    self[len] = '\0';
    char *slash = strrchr(self, '/');
    if (slash)
        *slash = '\0';
    if ((size_t)snprintf(out, n, "%.*s/images", (int)(n > 8 ? n - 8 : 0), self) >= n)
        out[0] = '\0';
}

int main(int argc, char **argv)
{
    struct control c = { 0 };
    if (parse_args(argc, argv, &c.o) < 0)
        return 2;
    log_init("strata-control");
    signal(SIGPIPE, SIG_IGN);
    char images[PATH_MAX];
    if (!c.o.images) {
        default_images(&c, images, sizeof images, argv[0]);
        c.o.images = images;
    }
    struct model *m = NULL;
    struct model_diag diag = { 0 };
    int rc = model_load_dir(c.o.manifests, &m, &diag);
    for (size_t i = 0; i < diag.nwarnings; i++)
        fprintf(stderr, "warning: %s\n", diag.warnings[i]);
    for (size_t i = 0; i < diag.nerrors; i++)
        fprintf(stderr, "error: %s\n", diag.errors[i]);
    model_diag_free(&diag);
    if (rc < 0) {
        if (!diag.nerrors)
            fprintf(stderr, "strata-control: -f %s: %s\n", c.o.manifests, strerror(-rc));
        fprintf(stderr, "strata-control: nothing applied\n");
        return 1;
    }

    if (image_check_model(m, c.o.images, "strata/proxy:dev", report_error, NULL)) {
        fprintf(stderr, "strata-control: nothing applied\n");
        model_free(m);
        return 1;
    }
    /* Valid: only now does anything change on disk. */
    if (prepare_state(&c) < 0) {
        model_free(m);
        return 1;
    }

    char prom[PATH_MAX + 64], am[PATH_MAX + 64], err[1024];
    if (monitoring_configs(&c, prom, sizeof prom, am, sizeof am) < 0) {
        fprintf(stderr, "strata-control: cannot write the monitoring configs in %s\n", c.state);
        return 1;
    }
    /* Rules and the Alertmanager config from deploy/observability/. */
    snprintf(c.rules_dir, sizeof c.rules_dir, "%s/prometheus/rules", c.state);
    snprintf(c.token_file, sizeof c.token_file, "%s/admin.token", c.state);
    snprintf(c.am_file, sizeof c.am_file, "%s", am);
    if (observability_install(c.o.manifests, c.rules_dir, am, c.o.admin, c.token_file, err, sizeof err) < 0) {
        fprintf(stderr, "strata-control: %s\n", err);
        model_free(m);
        return 1;
    }
    /* Every port the platform listens on, chosen now so that none of the
     * free ports handed out later (data layer, replicas) is one of them. */
    static int reserved[16];
    size_t nres = 0;
    const char *const addrs[] = { c.o.admin, c.o.gw_http, c.o.gw_https };
    for (size_t i = 0; i < 3; i++) {
        const char *colon = strrchr(addrs[i], ':');
        if (colon && atoi(colon + 1) > 0)
            reserved[nres++] = atoi(colon + 1);
    }
    if (c.o.prometheus_port > 0)
        reserved[nres++] = c.o.prometheus_port;
    if (c.o.alertmanager_port > 0)
        reserved[nres++] = c.o.alertmanager_port;
    int dl_ports[4];
    for (int i = 0; i < 4; i++) {
        if ((dl_ports[i] = controller_free_port(reserved, nres)) < 0) {
            fprintf(stderr, "strata-control: no free port for the data layer: %s\n", strerror(-dl_ports[i]));
            model_free(m);
            return 1;
        }
        reserved[nres++] = dl_ports[i];
    }
    struct datalayer_config dc = { .state_dir = c.state,
                                   .pg_port = dl_ports[0],
                                   .redis_port = dl_ports[1],
                                   .nats_port = dl_ports[2],
                                   .nats_monitor_port = dl_ports[3],
                                   .prometheus_port = c.o.prometheus_port,
                                   .prometheus_config = prom,
                                   .alertmanager_port = c.o.alertmanager_port,
                                   .alertmanager_config = am };
    if (datalayer_start(&dc, &c.dl, err, sizeof err) < 0) {
        fprintf(stderr, "strata-control: data layer: %s\n", err);
        model_free(m);
        return 1;
    }
    json_t *secrets = resolve_secrets(&c, m);
    char cadir[PATH_MAX + 8];
    snprintf(cadir, sizeof cadir, "%s/ca", c.state);
    if (!secrets || ca_open(cadir, &c.ca, err, sizeof err) < 0) {
        if (secrets)
            fprintf(stderr, "strata-control: CA: %s\n", err);
        json_decref(secrets);
        model_free(m);
        datalayer_stop(c.dl);
        return 1;
    }
    snprintf(c.ca_file, sizeof c.ca_file, "%s", ca_bundle_path(c.ca));
    c.xds = xds_new(c.ca, 0);

    /* The admin API: one worker loop carries the API, the proxy protocol
     * and the runtime. */
    setenv("WORKERS", "1", 1);
    unsetenv("PORT");
    setenv("LISTEN_ADDR", c.o.admin, 1);
    c.auth = (struct admin_auth){ .check = auth_check, .arg = &c };
    const char *loki = getenv("LOKI_URL");
    if (loki && *loki) {
        if (logship_check_url(loki, err, sizeof err) < 0) {
            fprintf(stderr, "strata-control: %s\n", err);
            datalayer_stop(c.dl);
            return 1;
        }
        c.loki_url = loki;
    }
    char logs_dir[PATH_MAX + 8];
    snprintf(logs_dir, sizeof logs_dir, "%s/logs", c.state);
    struct service_config sc = { .name = "strata-control", .listen = c.o.admin, .workers = 1,
                                 .shutdown_timeout_ms = 5000, .max_body = TRACES_MAX_BODY };
    c.svc = service_new(&sc);
    if (!c.svc || !c.xds || xds_register(c.xds, c.svc) < 0 ||
        service_route(c.svc, "GET", "/v1/status", h_status, &c) < 0 ||
        service_route(c.svc, "GET", "/v1/events", h_events, &c) < 0 ||
        service_route(c.svc, "GET", "/v1/sd", h_sd, &c) < 0 ||
        service_route(c.svc, "POST", "/v1/shutdown", h_shutdown, &c) < 0 ||
        service_route(c.svc, "POST", "/v1/apply", h_apply, &c) < 0 ||
        service_route(c.svc, "POST", "/v1/workloads/{name}/scale", h_scale, &c) < 0 ||
        service_route(c.svc, "POST", "/v1/workloads/{name}/rollout/{action}", h_rollout, &c) < 0 ||
        service_route(c.svc, "POST", "/v1/drain/{name}", h_drain, &c) < 0 ||
        service_add_check(c.svc, "workloads", ctl_ready, &c) < 0 || !(c.alerts = alerts_new(0)) ||
        alerts_register(c.alerts, c.svc, &c.auth) < 0 || logsearch_register(c.svc, logs_dir, &c.auth) < 0 ||
        !(c.traces = traces_new(0, 0)) || traces_register(c.traces, c.svc, &c.auth) < 0 ||
        console_register(c.svc, &c.auth, datalayer_prometheus_url(c.dl)) < 0) {
        fprintf(stderr, "strata-control: cannot set up the admin API\n");
        datalayer_stop(c.dl);
        return 1;
    }
    if ((rc = service_bind(c.svc)) < 0) {
        fprintf(stderr, "strata-control: --admin %s: cannot listen: %s\n", c.o.admin, strerror(-rc));
        datalayer_stop(c.dl);
        return 1;
    }
    snprintf(c.admin_url, sizeof c.admin_url, "http://127.0.0.1:%u", service_port(c.svc));

    char redis_addr[64] = "";
    const char *ru = datalayer_redis_url(c.dl);
    if (ru && !strncmp(ru, "redis://", 8))
        sscanf(ru + 8, "%63[^/]", redis_addr);
    struct controller_config cc = {
        .state_dir = c.state,
        .images_dir = c.o.images,
        .proxy_image = "strata/proxy:dev",
        .control_url = c.admin_url,
        .gateway_http = c.o.gw_http,
        .gateway_https = c.o.gw_https,
        .trust_domain = "strata.local",
        .redis_addr = *redis_addr ? redis_addr : NULL,
        .backoff_base_ms = (uint32_t)c.o.backoff_base_ms,
        .hpa_interval_ms = (uint32_t)c.o.hpa_interval_ms,
        .otlp_endpoint = c.admin_url, /* the control plane keeps recent traces (GET /v1/traces) */
        .reserved_ports = reserved,
        .nreserved_ports = nres,
        .ca = c.ca,
        .xds = c.xds,
    };
    c.ctl = controller_new(&cc, m, secrets);
    if (!c.ctl) {
        datalayer_stop(c.dl);
        return 1;
    }
    service_on_worker(c.svc, worker_start, worker_stop, &c);
    service_on_prestop(c.svc, prestop, &c);
    write_control_json(&c);
    log_info("control plane up", LOG_STR("admin", c.admin_url), LOG_STR("state", c.state));
    rc = service_run(c.svc);
    if (c.dl)
        datalayer_stop(c.dl);
    controller_free(c.ctl); /* NULL after the worker stopped */
    service_free(c.svc);
    xds_free(c.xds);
    alerts_free(c.alerts);
    traces_free(c.traces);
    ca_free(c.ca);
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/control.json", c.state);
    unlink(path);
    return rc < 0 ? 1 : 0;
}
