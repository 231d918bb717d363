/* The config compiler (src/control/compile*.c): small models built in C
 * (a sidecar's mesh and a gateway's edge), compiled, dumped, and parsed back
 * by the proxy's own parser (proxy_config_parse); then what the proxy would
 * do is asked of the parsed config (route matching, clusters, policies).
 * When deploy/ holds manifests, every proxy of the reference system is
 * compiled from model_load_dir too. */
#include <dirent.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "control/compile.h"
#include "core/http1_parse.h"
#include "proxy/proxy_config.h"

static char g_dir[256], g_cert[300], g_key[300], g_ca[300];

/* The proxy checks that cluster tls files are readable at load (only): empty
 * files do. */
static void make_files(void)
{
    snprintf(g_dir, sizeof g_dir, "/tmp/strata-test-compile-XXXXXX");
    CHECK(mkdtemp(g_dir) != NULL);
    snprintf(g_cert, sizeof g_cert, "%s/cert.pem", g_dir);
    snprintf(g_key, sizeof g_key, "%s/key.pem", g_dir);
    snprintf(g_ca, sizeof g_ca, "%s/ca.pem", g_dir);
    const char *files[] = { g_cert, g_key, g_ca };
    for (size_t i = 0; i < 3; i++) {
        FILE *f = fopen(files[i], "w");
        CHECK(f != NULL);
        if (f)
            fclose(f);
    }
}

static void remove_files(void)
{
    unlink(g_cert);
    unlink(g_key);
    unlink(g_ca);
    rmdir(g_dir);
}

/* ---- building models ---------------------------------------------------- */

/* Compound literals in a function live as long as its block: the model's
 * arrays are copied to the heap (kept) and freed by world_free. */
static void *g_kept[256];
static size_t g_nkept;

static void *keep(const void *p, size_t n)
{
    void *q = malloc(n);
    CHECK(q != NULL && g_nkept < sizeof g_kept / sizeof *g_kept);
    if (!q || g_nkept == sizeof g_kept / sizeof *g_kept)
        abort();
    memcpy(q, p, n);
    g_kept[g_nkept++] = q;
    return q;
}

#define L(...) ((struct model_kv[]){ __VA_ARGS__ })
#define LABELS(...) \
    ((struct model_labels){ keep(L(__VA_ARGS__), sizeof L(__VA_ARGS__)), sizeof L(__VA_ARGS__) / sizeof(struct model_kv) })
#define SA(...) ((const char *[]){ __VA_ARGS__ })
#define STRS(...) keep(SA(__VA_ARGS__), sizeof SA(__VA_ARGS__)), (sizeof SA(__VA_ARGS__) / sizeof(const char *))

static struct model_container g_app = {
    .name = "app",
    .image = "strata/x:dev",
    .readiness = { .set = true, .path = "/ready", .port = 8080 },
};

static struct model_deployment deployment(const char *name, struct model_labels labels, const char *sa, bool gw)
{
    return (struct model_deployment){ .name = name, .namespace = "default", .replicas = 1, .selector = labels,
                                      .pod_labels = labels, .service_account = sa, .containers = &g_app,
                                      .ncontainers = 1, .termination_grace_s = 30, .inject_sidecar = !gw,
                                      .is_gateway = gw };
}

static struct model_service service(const char *name)
{
    static struct model_service_port port = { .name = "http", .port = 80, .target_port = 8080 };
    struct model_service s = { .name = name, .namespace = "default", .ports = &port, .nports = 1 };
    s.selector.items = calloc(1, sizeof *s.selector.items);
    s.selector.items[0] = (struct model_kv){ "app", name };
    s.selector.n = 1;
    return s;
}

/* The mesh of the reference system, small: three services, order-svc in two
 * versions with a 90/10 canary, a breaker and outlier detection. */
struct world {
    struct model m;
    struct model_deployment deps[5];
    struct model_service svcs[3];
    struct model_destinationrule dr[2];
    struct model_subset subsets[2];
    struct model_virtualservice vs[1];
    struct model_http_route vs_http[1];
    struct model_route_dest vs_dest[2];
    struct model_peerauth pa[2];
    struct model_authzpolicy ap[3];
    struct model_authz_rule ap_rules[3];
    struct model_authz_source ap_src[3];
    struct model_authz_op ap_op[3];
    struct model_ingress ing[1];
    struct model_ingress_rule ing_rule[1];
    struct model_ingress_path ing_paths[6];
    struct model_requestauth ra[1];
    struct model_jwt_rule ra_rule[1];
    struct model_ratelimit rl[1];
    struct model_ratelimit_rule rl_rules[2];
    struct model_waf waf[1];
};

static void world_init(struct world *w)
{
    memset(w, 0, sizeof *w);
    w->deps[0] = deployment("gateway", LABELS({ "app", "gateway" }), "gateway", true);
    w->deps[1] = deployment("auth-svc", LABELS({ "app", "auth-svc" }), "auth-svc", false);
    w->deps[2] = deployment("user-svc", LABELS({ "app", "user-svc" }, { "topology.kubernetes.io/zone", "eu-a" }),
                            "user-svc", false);
    w->deps[3] = deployment("order-svc-v1", LABELS({ "app", "order-svc" }, { "version", "v1" }), "order-svc", false);
    w->deps[4] = deployment("order-svc-v2", LABELS({ "app", "order-svc" }, { "version", "v2" }), "order-svc", false);
    w->svcs[0] = service("auth-svc");
    w->svcs[1] = service("user-svc");
    w->svcs[2] = service("order-svc");

    w->subsets[0] = (struct model_subset){ "v1", LABELS({ "version", "v1" }) };
    w->subsets[1] = (struct model_subset){ "v2", LABELS({ "version", "v2" }) };
    w->dr[0] = (struct model_destinationrule){ .name = "order-svc", .namespace = "default", .host = "order-svc",
                                               .lb = MODEL_LB_LEAST_REQUEST, .max_requests = 100, .max_retries = 7,
                                               .outlier = true, .consecutive_5xx = 3,
                                               .consecutive_gateway_errors = -1, .interval_ms = 5000,
                                               .base_ejection_ms = 15000, .max_ejection_percent = 50,
                                               .subsets = w->subsets, .nsubsets = 2 };
    w->dr[1] = (struct model_destinationrule){ .name = "user-svc", .namespace = "default", .host = "user-svc",
                                               .max_connections = 64, .consecutive_5xx = -1,
                                               .consecutive_gateway_errors = -1, .max_ejection_percent = -1 };

    w->vs_dest[0] = (struct model_route_dest){ .host = "order-svc", .subset = "v1", .weight = 90 };
    w->vs_dest[1] = (struct model_route_dest){ .host = "order-svc", .subset = "v2", .weight = 10 };
    w->vs_http[0] = (struct model_http_route){ .name = "canary", .route = w->vs_dest, .nroute = 2,
                                               .timeout_ms = 2500, .retry_attempts = 3, .per_try_timeout_ms = 800,
                                               .retry_on = "5xx,connect-failure,refused-stream,503,unavailable" };
    w->vs[0] = (struct model_virtualservice){ .name = "order-svc", .namespace = "default",
                                              .hosts = keep(SA("order-svc"), sizeof SA("order-svc")), .nhosts = 1,
                                              .http = w->vs_http, .nhttp = 1 };

    w->pa[0] = (struct model_peerauth){ .name = "default", .namespace = "default" };
    w->pa[1] = (struct model_peerauth){ .name = "user-permissive", .namespace = "default",
                                        .selector = LABELS({ "app", "user-svc" }), .permissive = true };

    /* user-svc: ALLOW the gateway and order-svc on /v1/users*. */
    w->ap_src[0] = (struct model_authz_source){ .principals = STRS("strata.local/ns/default/sa/gateway",
                                                                   "strata.local/ns/default/sa/order-svc") };
    w->ap_op[0] = (struct model_authz_op){ .paths = STRS("/v1/users*"), .methods = STRS("GET", "POST") };
    w->ap_rules[0] = (struct model_authz_rule){ &w->ap_src[0], 1, &w->ap_op[0], 1 };
    w->ap[0] = (struct model_authzpolicy){ .name = "user-callers", .namespace = "default",
                                           .selector = LABELS({ "app", "user-svc" }), .rules = &w->ap_rules[0],
                                           .nrules = 1 };
    /* Namespace-wide DENY of /debug for anyone but auth-svc. */
    w->ap_src[1] = (struct model_authz_source){ .not_principals = STRS("strata.local/ns/default/sa/auth-svc") };
    w->ap_op[1] = (struct model_authz_op){ .paths = STRS("/debug*") };
    w->ap_rules[1] = (struct model_authz_rule){ &w->ap_src[1], 1, &w->ap_op[1], 1 };
    w->ap[1] = (struct model_authzpolicy){ .name = "no-debug", .namespace = "default", .deny = true,
                                           .rules = &w->ap_rules[1], .nrules = 1 };
    /* The gateway: a token is required on the protected paths. */
    w->ap_src[2] = (struct model_authz_source){ .not_request_principals = STRS("*") };
    w->ap_op[2] = (struct model_authz_op){ .paths = STRS("/v1/users/*", "/v1/orders*") };
    w->ap_rules[2] = (struct model_authz_rule){ &w->ap_src[2], 1, &w->ap_op[2], 1 };
    w->ap[2] = (struct model_authzpolicy){ .name = "require-jwt", .namespace = "default", .deny = true,
                                           .selector = LABELS({ "app", "gateway" }), .rules = &w->ap_rules[2],
                                           .nrules = 1 };

    w->ing_paths[0] = (struct model_ingress_path){ .path = "/v1/users", .exact = false, .service = "user-svc", .service_port = 80 };
    w->ing_paths[1] = (struct model_ingress_path){ .path = "/v1/auth", .exact = false, .service = "auth-svc", .service_port = 80 };
    w->ing_paths[2] = (struct model_ingress_path){ .path = "/.well-known/jwks.json", .exact = true, .service = "auth-svc", .service_port = 80 };
    w->ing_paths[3] = (struct model_ingress_path){ .path = "/v1/orders", .exact = false, .service = "order-svc", .service_port = 80 };
    w->ing_paths[4] = (struct model_ingress_path){ .path = "/internal/v1", .exact = false, .service = "user-svc", .service_port = 80 };
    w->ing_paths[5] = (struct model_ingress_path){ .path = "/v1", .exact = false, .service = "auth-svc", .service_port = 80 };
    w->ing_rule[0] = (struct model_ingress_rule){ NULL, w->ing_paths, 6 };
    w->ing[0] = (struct model_ingress){ .name = "public", .namespace = "default", .rules = w->ing_rule, .nrules = 1 };

    w->ra_rule[0] = (struct model_jwt_rule){ .issuer = "https://auth.strata.local", .audiences = STRS("strata"),
                                             .jwks_uri = "http://auth-svc/.well-known/jwks.json",
                                             .forward_original_token = true };
    w->ra[0] = (struct model_requestauth){ .name = "gateway-jwt", .namespace = "default",
                                           .selector = LABELS({ "app", "gateway" }), .rules = w->ra_rule,
                                           .nrules = 1 };
    w->rl_rules[0] = (struct model_ratelimit_rule){ .path_prefix = "/v1/auth/login", .methods = STRS("POST"),
                                                    .key = MODEL_RL_CLIENT_IP, .requests = 10, .period_s = 60,
                                                    .burst = 5 };
    w->rl_rules[1] = (struct model_ratelimit_rule){ .path_prefix = "/v1/orders", .key = MODEL_RL_JWT_SUB,
                                                    .requests = 100, .period_s = 1, .global = true };
    w->rl[0] = (struct model_ratelimit){ .name = "public", .namespace = "default", .rules = w->rl_rules, .nrules = 2 };
    w->waf[0] = (struct model_waf){ .name = "crs", .namespace = "default", .path_prefixes = STRS("/v1/"),
                                    .paranoia = 2, .anomaly_threshold = 7 };

    struct model *m = &w->m;
    m->deployments = w->deps, m->ndeployments = 5;
    m->services = w->svcs, m->nservices = 3;
    m->destinationrules = w->dr, m->ndestinationrules = 2;
    m->virtualservices = w->vs, m->nvirtualservices = 1;
    m->peerauths = w->pa, m->npeerauths = 2;
    m->authzpolicies = w->ap, m->nauthzpolicies = 3;
    m->ingresses = w->ing, m->ningresses = 1;
    m->requestauths = w->ra, m->nrequestauths = 1;
    m->ratelimits = w->rl, m->nratelimits = 1;
    m->wafs = w->waf, m->nwafs = 1;
}

static void world_free(struct world *w)
{
    for (size_t i = 0; i < 3; i++)
        free(w->svcs[i].selector.items);
    while (g_nkept)
        free(g_kept[--g_nkept]);
}

/* Replicas: address by index, one not ready, one of the gateway (no Service). */
static struct model_labels ep_labels[7];
static struct compile_endpoint g_eps[7];

static void endpoints(struct world *w)
{
    static const struct {
        const char *replica;
        int dep;
        bool ready;
        const char *sa;
    } r[] = { { "auth-svc-a-1", 1, true, "auth-svc" },     { "user-svc-a-1", 2, true, "user-svc" },
              { "user-svc-a-2", 2, false, "user-svc" },    { "order-svc-v1-a-1", 3, true, "order-svc" },
              { "order-svc-v1-a-2", 3, true, "order-svc" }, { "order-svc-v2-a-1", 4, true, "order-svc" },
              { "gateway-a-1", 0, true, "gateway" } };
    static char addr[7][32], id[7][128];
    for (size_t i = 0; i < 7; i++) {
        ep_labels[i] = w->deps[r[i].dep].pod_labels;
        snprintf(addr[i], sizeof addr[i], "127.0.0.1:%zu", 15000 + i);
        snprintf(id[i], sizeof id[i], "spiffe://strata.local/ns/default/sa/%s", r[i].sa);
        g_eps[i] = (struct compile_endpoint){ r[i].replica, w->deps[r[i].dep].name, &ep_labels[i], addr[i],
                                              r[i].dep != 0, id[i], r[i].ready };
    }
}

static struct compile_proxy sidecar_proxy(const struct model_deployment *d, const char *sa)
{
    static char id[128];
    snprintf(id, sizeof id, "spiffe://strata.local/ns/default/sa/%s", sa);
    return (struct compile_proxy){ .id = d->name, .deployment = d, .trust_domain = "strata.local", .spiffe_id = id,
                                   .admin_addr = "127.0.0.1:16000", .cert_file = g_cert, .key_file = g_key,
                                   .ca_file = g_ca, .app_addr = "127.0.0.1:16001",
                                   .inbound_addr = "127.0.0.1:16002", .outbound_addr = "127.0.0.1:16003" };
}

static struct compile_proxy gateway_proxy(const struct model_deployment *d, const char *redis)
{
    return (struct compile_proxy){ .id = "gateway-a-1", .deployment = d, .trust_domain = "strata.local",
                                   .spiffe_id = "spiffe://strata.local/ns/default/sa/gateway",
                                   .admin_addr = "127.0.0.1:17000", .cert_file = g_cert, .key_file = g_key,
                                   .ca_file = g_ca, .http_addr = "127.0.0.1:17080", .https_addr = "127.0.0.1:17443",
                                   .redis_addr = redis };
}

/* Compiles, dumps and parses back; NULL (and a failed check) when any step fails. */
static struct proxy_config *compile_parse(const struct model *m, const struct compile_endpoint *eps, size_t n,
                                          const struct compile_proxy *p, char **text_out)
{
    char err[512] = "";
    json_t *doc = compile_proxy_config(m, eps, n, p, "v-test.1", err, sizeof err);
    if (!doc)
        fprintf(stderr, "compile: %s\n", err);
    CHECK(doc != NULL);
    if (!doc)
        return NULL;
    char *text = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    CHECK(text != NULL);
    struct proxy_config *c = NULL;
    int rc = text ? proxy_config_parse("compiled.json", str_from_cstr(text), &c, err, sizeof err) : -1;
    if (rc < 0)
        fprintf(stderr, "parse: %s\n%s\n", err, text ? text : "");
    CHECK_INT(rc, 0);
    if (text_out)
        *text_out = text;
    else
        free(text);
    return rc == 0 ? c : NULL;
}

static const struct proxy_route *match(const struct proxy_config *c, const char *listener, const char *host,
                                       const char *method, const char *path)
{
    struct proxy_match_input in = { str_from_cstr(host), str_from_cstr(path), str_from_cstr(method), NULL, 0,
                                    listener };
    return proxy_route_match(c, &in);
}

static const struct proxy_cluster *cluster(const struct proxy_config *c, const char *name)
{
    for (size_t i = 0; i < c->nclusters; i++)
        if (!strcmp(c->clusters[i].name, name))
            return &c->clusters[i];
    return NULL;
}

static const struct proxy_authz_policy *policy(const struct proxy_config *c, const char *name)
{
    for (size_t i = 0; i < c->nauthz; i++)
        if (!strcmp(c->authz[i].name, name))
            return &c->authz[i];
    return NULL;
}

/* ---- sidecars ----------------------------------------------------------- */

static void test_sidecar_order(void)
{
    struct world w;
    world_init(&w);
    endpoints(&w);
    struct compile_proxy p = sidecar_proxy(&w.deps[3], "order-svc");
    struct proxy_config *c = compile_parse(&w.m, g_eps, 7, &p, NULL);
    if (!c)
        goto out;
    CHECK_STR(c->version, "v-test.1");
    CHECK_STR(c->workload, "order-svc");
    CHECK_STR(c->spiffe_id, "spiffe://strata.local/ns/default/sa/order-svc");
    CHECK_STR(c->app_ready_url, "http://127.0.0.1:16001/ready");
    CHECK_INT(c->app_exit_wait_ms, 30000);
    CHECK_INT(c->nlisteners, 2);
    CHECK_INT(c->listeners[0].role, PROXY_ROLE_INBOUND);
    CHECK_INT(c->listeners[0].mtls_mode, PROXY_MTLS_STRICT); /* the namespace-wide default */
    CHECK_STR(c->listeners[0].client_ca_file, g_ca);
    CHECK_INT(c->listeners[1].role, PROXY_ROLE_OUTBOUND);
    CHECK(c->admin_enabled);

    /* Only the namespace-wide DENY selects order-svc. */
    CHECK_INT(c->nauthz, 1);
    const struct proxy_authz_policy *nd = policy(c, "no-debug");
    CHECK(nd && nd->action == PROXY_AUTHZ_DENY && nd->nrules == 1 && nd->rules[0].nfrom == 1 &&
          nd->rules[0].from[0].nnot_principals == 1);

    /* Inbound: everything to the app. */
    const struct proxy_route *r = match(c, "inbound", "whatever", "GET", "/v1/orders");
    CHECK(r && r->ndestinations == 1 && !strcmp(r->destinations[0].cluster->name, "app"));
    CHECK(r && r->destinations[0].cluster->nendpoints == 1);

    /* Outbound canary: 90/10 between subsets, retries mapped. */
    const char *hosts[] = { "order-svc", "order-svc:80", "order-svc.default", "order-svc.default.svc.cluster.local" };
    for (size_t i = 0; i < 4; i++) {
        r = match(c, "outbound", hosts[i], "GET", "/v1/orders/1");
        CHECK(r != NULL);
        if (!r)
            continue;
        CHECK_INT(r->ndestinations, 2);
        CHECK_STR(r->destinations[0].cluster->name, "order-svc");
        CHECK_STR(r->destinations[0].subset ? r->destinations[0].subset->name : NULL, "v1");
        CHECK_INT(r->destinations[0].weight, 90);
        CHECK_STR(r->destinations[1].subset ? r->destinations[1].subset->name : NULL, "v2");
        CHECK_INT(r->destinations[1].weight, 10);
        CHECK_INT(r->timeout_ms, 2500);
        CHECK_INT(r->retry.attempts, 3);
        CHECK_INT(r->retry.per_try_timeout_ms, 800);
        CHECK_INT(r->retry.retry_on, PROXY_RETRY_5XX | PROXY_RETRY_CONNECT_FAILURE | PROXY_RETRY_RESET |
                                         PROXY_RETRY_STATUS_CODES);
        CHECK_INT(r->retry.nstatus_codes, 1);
        CHECK_INT(r->retry.status_codes[0], 503);
    }
    /* The outbound routes are scoped: not on the inbound listener. */
    r = match(c, "inbound", "order-svc", "GET", "/x");
    CHECK(r && !strcmp(r->destinations[0].cluster->name, "app"));
    /* No VirtualService: the Service's cluster, Istio's default retries. */
    r = match(c, "outbound", "user-svc", "POST", "/v1/users");
    CHECK(r && r->ndestinations == 1 && !strcmp(r->destinations[0].cluster->name, "user-svc"));
    CHECK(r && r->retry.attempts == 2 && r->retry.retry_on == PROXY_RETRY_CONNECT_FAILURE);
    CHECK(match(c, "outbound", "unknown-svc", "GET", "/") == NULL);

    /* Clusters: subsets, breaker, outlier detection, ready endpoints, mTLS identity. */
    const struct proxy_cluster *k = cluster(c, "order-svc");
    CHECK(k != NULL);
    if (k) {
        CHECK_INT(k->nendpoints, 3);
        CHECK_INT(k->lb, PROXY_LB_LEAST_REQUEST);
        CHECK_INT(k->nsubsets, 2);
        CHECK_INT(k->subsets[0].nmembers, 2); /* v1 */
        CHECK_INT(k->subsets[1].nmembers, 1); /* v2 */
        CHECK_INT(k->breaker.max_requests, 100);
        CHECK_INT(k->breaker.max_retries, 7);
        CHECK_INT(k->breaker.max_connections, 0);
        CHECK(k->outlier.enabled);
        CHECK_INT(k->outlier.consecutive_5xx, 3);
        CHECK_INT(k->outlier.consecutive_gateway_errors, 0);
        CHECK_INT(k->outlier.interval_ms, 5000);
        CHECK_INT(k->outlier.base_ejection_ms, 15000);
        CHECK_INT(k->outlier.max_ejection_percent, 50);
        CHECK(k->tls && !strcmp(k->tls->spiffe_id, "spiffe://strata.local/ns/default/sa/order-svc"));
        CHECK(k->tls && !strcmp(k->tls->cert_file, g_cert) && !strcmp(k->tls->ca_file, g_ca));
    }
    k = cluster(c, "user-svc");
    CHECK(k != NULL);
    if (k) {
        CHECK_INT(k->nendpoints, 1); /* user-svc-a-2 is not ready */
        CHECK_STR(k->endpoints[0].name, "127.0.0.1:15001");
        CHECK_STR(k->endpoints[0].zone, "eu-a");
        CHECK_INT(k->breaker.max_connections, 64);
        CHECK(!k->outlier.enabled);
        CHECK(k->tls && !strcmp(k->tls->spiffe_id, "spiffe://strata.local/ns/default/sa/user-svc"));
    }
    CHECK(cluster(c, "gateway") == NULL);
    proxy_config_free(c);
out:
    world_free(&w);
}

static void test_sidecar_user_permissive_authz(void)
{
    struct world w;
    world_init(&w);
    endpoints(&w);
    struct compile_proxy p = sidecar_proxy(&w.deps[2], "user-svc");
    struct proxy_config *c = compile_parse(&w.m, g_eps, 7, &p, NULL);
    if (!c)
        goto out;
    /* The workload-selector PeerAuthentication wins over the namespace's. */
    CHECK_INT(c->listeners[0].mtls_mode, PROXY_MTLS_PERMISSIVE);
    CHECK_STR(c->zone, "eu-a");
    CHECK_INT(c->nauthz, 2);
    const struct proxy_authz_policy *a = policy(c, "user-callers");
    CHECK(a != NULL);
    if (a) {
        CHECK_INT(a->action, PROXY_AUTHZ_ALLOW);
        CHECK_INT(a->nrules, 1);
        CHECK_INT(a->rules[0].nfrom, 1);
        CHECK_INT(a->rules[0].from[0].nprincipals, 2);
        CHECK_STR(a->rules[0].from[0].principals[0], "strata.local/ns/default/sa/gateway");
        CHECK_STR(a->rules[0].from[0].principals[1], "strata.local/ns/default/sa/order-svc");
        CHECK_INT(a->rules[0].nto, 1);
        CHECK_STR(a->rules[0].to[0].paths[0], "/v1/users*");
        CHECK_INT(a->rules[0].to[0].nmethods, 2);
    }
    proxy_config_free(c);
out:
    world_free(&w);
}

/* A source requiring a request principal never matches at a sidecar (it
 * verifies no JWT): the rule goes, an ALLOW left without rules allows nothing. */
static void test_sidecar_request_principals(void)
{
    struct world w;
    world_init(&w);
    endpoints(&w);
    w.ap_src[0] = (struct model_authz_source){ .request_principals = STRS("*") };
    struct compile_proxy p = sidecar_proxy(&w.deps[2], "user-svc");
    struct proxy_config *c = compile_parse(&w.m, g_eps, 7, &p, NULL);
    if (c) {
        const struct proxy_authz_policy *a = policy(c, "user-callers");
        CHECK(a && a->action == PROXY_AUTHZ_ALLOW && a->nrules == 0);
        proxy_config_free(c);
    }
    world_free(&w);
}

/* Equal inputs, endpoints in another order: byte-identical output. */
static void test_deterministic(void)
{
    struct world w;
    world_init(&w);
    endpoints(&w);
    struct compile_endpoint rev[7];
    for (size_t i = 0; i < 7; i++)
        rev[i] = g_eps[6 - i];
    struct compile_proxy ps[2] = { sidecar_proxy(&w.deps[3], "order-svc"), gateway_proxy(&w.deps[0], "127.0.0.1:6379") };
    for (size_t k = 0; k < 2; k++) {
        char *a = NULL, *b = NULL, *d = NULL;
        struct proxy_config *c1 = compile_parse(&w.m, g_eps, 7, &ps[k], &a);
        struct proxy_config *c2 = compile_parse(&w.m, rev, 7, &ps[k], &b);
        struct proxy_config *c3 = compile_parse(&w.m, g_eps, 7, &ps[k], &d);
        CHECK(a && b && !strcmp(a, b));
        CHECK(a && d && !strcmp(a, d));
        proxy_config_free(c1);
        proxy_config_free(c2);
        proxy_config_free(c3);
        free(a);
        free(b);
        free(d);
    }
    world_free(&w);
}

/* ---- the gateway -------------------------------------------------------- */

static void check_jwt(const struct proxy_config *c, const char *method, const char *path, enum proxy_jwt_mode want)
{
    const struct proxy_route *r = match(c, "https", "api.example.test", method, path);
    CHECK(r != NULL);
    if (!r)
        return;
    if (r->jwt_mode != want)
        fprintf(stderr, "%s %s: route %s, jwt mode %d, want %d\n", method, path, r->name, r->jwt_mode, want);
    CHECK_INT(r->jwt_mode, want);
    CHECK(r->jwt && !strcmp(r->jwt->name, "gateway-jwt"));
}

static void test_gateway(void)
{
    struct world w;
    world_init(&w);
    endpoints(&w);
    struct compile_proxy p = gateway_proxy(&w.deps[0], "127.0.0.1:6379");
    char *text = NULL;
    struct proxy_config *c = compile_parse(&w.m, g_eps, 7, &p, &text);
    if (!c)
        goto out;
    CHECK_INT(c->nlisteners, 2);
    CHECK_STR(c->listeners[0].name, "http");
    CHECK_INT(c->listeners[0].ncerts, 0);
    CHECK_STR(c->listeners[1].name, "https");
    CHECK(c->listeners[1].ncerts == 1 && !strcmp(c->listeners[1].cert_files[0], g_cert));
    CHECK_INT(c->nauthz, 0);
    CHECK(c->app_ready_url == NULL);
    CHECK_STR(c->redis_url, "redis://127.0.0.1:6379");

    /* The provider fetches its keys through the gateway's own plain listener. */
    CHECK_INT(c->njwt_providers, 1);
    if (c->njwt_providers == 1) {
        const struct proxy_jwt_provider *jp = &c->jwt_providers[0];
        CHECK_STR(jp->issuer, "https://auth.strata.local");
        CHECK(jp->naudiences == 1 && !strcmp(jp->audiences[0], "strata"));
        CHECK_STR(jp->jwks_uri, "http://127.0.0.1:17080/.well-known/jwks.json");
        CHECK(jp->forward_token);
    }
    const struct proxy_route *r = match(c, "http", "127.0.0.1:17080", "GET", "/.well-known/jwks.json");
    CHECK(r && r->jwt_mode == PROXY_JWT_OFF && !strcmp(r->destinations[0].cluster->name, "auth-svc"));
    CHECK(r && r->destinations[0].cluster->tls != NULL);

    /* JWT required exactly where the DENY notRequestPrincipals covers. */
    check_jwt(c, "POST", "/v1/users", PROXY_JWT_OPTIONAL);
    check_jwt(c, "GET", "/v1/users/me", PROXY_JWT_REQUIRED);
    check_jwt(c, "GET", "/v1/users/42", PROXY_JWT_REQUIRED);
    check_jwt(c, "GET", "/v1/orders", PROXY_JWT_REQUIRED);
    check_jwt(c, "POST", "/v1/orders/1/cancel", PROXY_JWT_REQUIRED);
    check_jwt(c, "POST", "/v1/auth/login", PROXY_JWT_OPTIONAL);
    check_jwt(c, "GET", "/.well-known/jwks.json", PROXY_JWT_OPTIONAL);
    check_jwt(c, "GET", "/v1/other", PROXY_JWT_OPTIONAL);

    /* Longest prefix first: /v1/users is user-svc's, not the /v1 catch-all's. */
    r = match(c, "https", "x", "GET", "/v1/users/me");
    CHECK(r && !strcmp(r->destinations[0].cluster->name, "user-svc"));
    r = match(c, "https", "x", "GET", "/v1/other");
    CHECK(r && !strcmp(r->destinations[0].cluster->name, "auth-svc"));

    /* /internal is never routed, even under the /v1 catch-all's reach. */
    r = match(c, "https", "x", "GET", "/internal/v1/users/1");
    CHECK(r && r->direct && r->direct->status == 404);

    /* The order-svc route carries the VirtualService's canary. */
    r = match(c, "https", "x", "GET", "/v1/orders");
    CHECK(r && r->ndestinations == 2 && r->destinations[0].weight == 90 && r->destinations[1].weight == 10);
    CHECK(r && r->destinations[1].subset && !strcmp(r->destinations[1].subset->name, "v2"));
    CHECK(r && r->destinations[0].cluster->tls && r->retry.attempts == 3 && r->timeout_ms == 2500);

    /* Rate limits: POST /v1/auth/login only; /v1/orders (global, by subject). */
    r = match(c, "https", "x", "POST", "/v1/auth/login");
    CHECK(r && r->rate_limit && !strcmp(r->rate_limit->name, "public-0"));
    CHECK(r && r->rate_limit && r->rate_limit->requests == 10 && r->rate_limit->period_ms == 60000 &&
          r->rate_limit->burst == 5 && !r->rate_limit->global);
    r = match(c, "https", "x", "GET", "/v1/auth/login");
    CHECK(r && r->rate_limit == NULL);
    r = match(c, "https", "x", "POST", "/v1/auth/refresh");
    CHECK(r && r->rate_limit == NULL);
    r = match(c, "https", "x", "GET", "/v1/orders/7");
    CHECK(r && r->rate_limit && r->rate_limit->global && r->rate_limit->key == PROXY_RL_JWT_SUB);

    /* WAF on /v1/ routes only. */
    r = match(c, "https", "x", "POST", "/v1/users");
    CHECK(r && r->waf.mode == PROXY_WAF_BLOCK && r->waf.paranoia == 2 && r->waf.anomaly_threshold == 7);
    r = match(c, "https", "x", "POST", "/v1/auth/login");
    CHECK(r && r->waf.mode == PROXY_WAF_BLOCK);
    r = match(c, "https", "x", "GET", "/.well-known/jwks.json");
    CHECK(r && r->waf.mode == PROXY_WAF_OFF);

    /* Clusters as for sidecars, with the gateway's certificate. */
    const struct proxy_cluster *k = cluster(c, "order-svc");
    CHECK(k && k->nendpoints == 3 && k->tls && !strcmp(k->tls->cert_file, g_cert));
    CHECK(text && strstr(text, "\"version\":\"v-test.1\"") != NULL);
    proxy_config_free(c);
out:
    free(text);
    world_free(&w);
}

/* Without Redis, a global limit is left out (it would fail open anyway). */
static void test_gateway_no_redis(void)
{
    struct world w;
    world_init(&w);
    endpoints(&w);
    struct compile_proxy p = gateway_proxy(&w.deps[0], NULL);
    struct proxy_config *c = compile_parse(&w.m, g_eps, 7, &p, NULL);
    if (c) {
        CHECK(c->redis_url == NULL);
        CHECK_INT(c->nrate_limits, 1);
        const struct proxy_route *r = match(c, "https", "x", "GET", "/v1/orders/7");
        CHECK(r && r->rate_limit == NULL);
        proxy_config_free(c);
    }
    world_free(&w);
}

/* A model the proxy cannot express is refused with a message. */
static void test_errors(void)
{
    struct world w;
    world_init(&w);
    endpoints(&w);
    char err[256] = "";
    w.vs_dest[1].subset = "v3";
    struct compile_proxy p = sidecar_proxy(&w.deps[3], "order-svc");
    json_t *doc = compile_proxy_config(&w.m, g_eps, 7, &p, "v", err, sizeof err);
    CHECK(doc == NULL);
    CHECK(strstr(err, "v3") != NULL);
    w.vs_dest[1].subset = "v2";
    w.ing_paths[0].service = "nope";
    struct compile_proxy gp = gateway_proxy(&w.deps[0], NULL);
    doc = compile_proxy_config(&w.m, g_eps, 7, &gp, "v", err, sizeof err);
    CHECK(doc == NULL);
    CHECK(strstr(err, "nope") != NULL);
    world_free(&w);
}

/* ---- the reference system ----------------------------------------------- */

static bool has_yaml(const char *dir)
{
    DIR *d = opendir(dir);
    bool found = false;
    for (struct dirent *e; d && !found && (e = readdir(d));) {
        size_t n = strlen(e->d_name);
        found = (n > 5 && !strcmp(e->d_name + n - 5, ".yaml")) || (n > 4 && !strcmp(e->d_name + n - 4, ".yml"));
    }
    if (d)
        closedir(d);
    return found;
}

static void test_deploy_dir(void)
{
    const char *src = getenv("STRATA_SOURCE_DIR");
    char dir[400];
    snprintf(dir, sizeof dir, "%.380s/deploy", src ? src : ".");
    if (!has_yaml(dir)) {
        fprintf(stderr, "note: %s has no yaml: the reference system is not compiled\n", dir);
        return;
    }
    struct model *m = NULL;
    struct model_diag diag = { 0 };
    int rc = model_load_dir(dir, &m, &diag);
    if (rc < 0) {
        fprintf(stderr, "note: %s does not load (%d, %zu errors%s%s): the reference system is not compiled\n", dir,
                rc, diag.nerrors, diag.nerrors ? ", first: " : "", diag.nerrors ? diag.errors[0] : "");
        model_diag_free(&diag);
        return;
    }
    /* Every replica of every Deployment, ready, on made-up addresses. */
    size_t n = 0;
    for (size_t i = 0; i < m->ndeployments; i++)
        n += (size_t)(m->deployments[i].replicas > 0 ? m->deployments[i].replicas : 1);
    struct compile_endpoint *eps = calloc(n + 1, sizeof *eps);
    char(*names)[160] = calloc(n + 1, sizeof *names);
    char(*addrs)[32] = calloc(n + 1, sizeof *addrs);
    char(*ids)[256] = calloc(n + 1, sizeof *ids);
    CHECK(eps && names && addrs && ids);
    size_t k = 0;
    for (size_t i = 0; eps && names && addrs && ids && i < m->ndeployments; i++) {
        const struct model_deployment *d = &m->deployments[i];
        for (int r = 0; r < (d->replicas > 0 ? d->replicas : 1); r++, k++) {
            snprintf(names[k], sizeof names[k], "%s-%d", d->name, r);
            snprintf(addrs[k], sizeof addrs[k], "127.0.0.1:%zu", 20000 + k);
            snprintf(ids[k], sizeof ids[k], "spiffe://strata.local/ns/%s/sa/%s", d->namespace ? d->namespace : "default",
                     d->service_account ? d->service_account : "default");
            eps[k] = (struct compile_endpoint){ names[k], d->name, &d->pod_labels, addrs[k],
                                                !d->is_gateway && d->inject_sidecar, ids[k], true };
        }
    }
    size_t compiled = 0;
    for (size_t i = 0; eps && i < m->ndeployments; i++) {
        const struct model_deployment *d = &m->deployments[i];
        if (!d->is_gateway && !d->inject_sidecar)
            continue;
        char id[300];
        snprintf(id, sizeof id, "spiffe://strata.local/ns/%s/sa/%s", d->namespace ? d->namespace : "default",
                 d->service_account ? d->service_account : "default");
        struct compile_proxy p = d->is_gateway ? gateway_proxy(d, "127.0.0.1:6379") : sidecar_proxy(d, "x");
        p.spiffe_id = id;
        struct proxy_config *c = compile_parse(m, eps, k, &p, NULL);
        if (!c)
            fprintf(stderr, "deploy: the proxy of %s does not compile and parse\n", d->name);
        compiled += c != NULL;
        proxy_config_free(c);
    }
    fprintf(stderr, "deploy: %zu proxies compiled and parsed\n", compiled);
    CHECK(compiled > 0);
    free(eps);
    free(names);
    free(addrs);
    free(ids);
    model_free(m);
    model_diag_free(&diag);
}

int main(void)
{
    make_files();
    RUN(test_sidecar_order);
    RUN(test_sidecar_user_permissive_authz);
    RUN(test_sidecar_request_principals);
    RUN(test_deterministic);
    RUN(test_gateway);
    RUN(test_gateway_no_redis);
    RUN(test_errors);
    RUN(test_deploy_dir);
    remove_files();
    return check_done();
}
