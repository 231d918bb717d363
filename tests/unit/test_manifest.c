/* The manifest model (control/model.h): a multi-kind fixture directory
 * decoded to the expected values; every class of error with its
 * file:line:column and field; errors across resources naming both files;
 * warnings for fields strata does not implement; nothing returned on
 * error; the reference system in deploy/ loading clean. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>

#include "check.h"
#include "control/model.h"

static const char *source_dir(void)
{
    const char *s = getenv("STRATA_SOURCE_DIR");
    return s ? s : ".";
}

static void print_diag(const struct model_diag *d)
{
    for (size_t i = 0; i < d->nerrors; i++)
        fprintf(stderr, "  error: %s\n", d->errors[i]);
    for (size_t i = 0; i < d->nwarnings; i++)
        fprintf(stderr, "  warning: %s\n", d->warnings[i]);
}

static bool has_line(char **lines, size_t n, const char *want)
{
    for (size_t i = 0; i < n; i++)
        if (strstr(lines[i], want))
            return true;
    return false;
}

/* Loads texts as files a.yaml, b.yaml, ... */
static int load2(const char *a, const char *b, struct model **m, struct model_diag *d)
{
    const char *names[] = { "a.yaml", "b.yaml" };
    const char *texts[] = { a, b };
    size_t lens[] = { strlen(a), b ? strlen(b) : 0 };
    return model_load_buffers(names, texts, lens, b ? 2 : 1, m, d);
}

/* Expects the load of a (and b) to fail with an error containing each of
 * the NULL-terminated wants. */
static void fails_with(const char *a, const char *b, const char *const *wants)
{
    struct model *m = (struct model *)1;
    struct model_diag d;
    int rc = load2(a, b, &m, &d);
    CHECK(rc < 0);
    CHECK(m == NULL);
    bool ok = true;
    for (const char *const *w = wants; *w; w++)
        if (!has_line(d.errors, d.nerrors, *w)) {
            fprintf(stderr, "no error contains \"%s\"\n", *w);
            ok = false;
        }
    CHECK(ok);
    if (!ok)
        print_diag(&d);
    model_diag_free(&d);
}

#define FAILS(a, ...) fails_with(a, NULL, (const char *const[]){ __VA_ARGS__, NULL })
#define FAILS2(a, b, ...) fails_with(a, b, (const char *const[]){ __VA_ARGS__, NULL })

/* ---- the valid fixture set ------------------------------------------------ */

static struct model *load_fixtures(struct model_diag *d)
{
    char dir[4096];
    struct model *m = NULL;
    snprintf(dir, sizeof dir, "%s/tests/unit/manifests/valid", source_dir());
    int rc = model_load_dir(dir, &m, d);
    if (rc != 0)
        print_diag(d);
    CHECK_INT(rc, 0);
    return m;
}

static void test_fixture_workloads(void)
{
    struct model_diag d;
    struct model *m = load_fixtures(&d);
    if (!m)
        return;
    CHECK_INT(d.nerrors, 0);
    CHECK_INT(m->ndeployments, 4);
    CHECK_INT(m->nservices, 3);
    const struct model_deployment *o = model_deployment(m, "order-svc-v1");
    CHECK(o != NULL);
    if (o) {
        CHECK_STR(o->namespace, "default");
        CHECK(strstr(o->loc.file, "10-apps.yaml") != NULL);
        CHECK_INT(o->loc.line, 2);
        CHECK_INT(o->replicas, 2);
        CHECK_STR(model_label(&o->selector, "version"), "v1");
        CHECK_STR(model_label(&o->pod_labels, "app"), "order-svc");
        CHECK_STR(o->service_account, "order-svc");
        CHECK_INT(o->termination_grace_s, 20);
        CHECK(o->max_surge.set && !o->max_surge.percent && o->max_surge.value == 1);
        CHECK(o->max_unavailable.percent && o->max_unavailable.value == 0);
        CHECK(o->inject_sidecar);
        CHECK(!o->is_gateway);
        CHECK_INT(strlen(o->template_hash), 16);
        CHECK_INT(o->ncontainers, 1);
        const struct model_container *c = &o->containers[0];
        CHECK_STR(c->image, "strata/order-svc:dev");
        CHECK_INT(c->nargs, 1);
        CHECK_INT(c->nports, 1);
        CHECK_INT(c->ports[0], 8080);
        CHECK_INT(c->nenv, 4);
        CHECK_STR(c->env[0].value, "http://user-svc");
        CHECK_STR(c->env[1].secret_name, "order-db");
        CHECK_STR(c->env[1].key, "url");
        CHECK(c->env[1].value == NULL);
        CHECK_STR(c->env[2].configmap_name, "order-config");
        CHECK(c->readiness.set);
        CHECK_STR(c->readiness.path, "/readyz");
        CHECK_INT(c->readiness.port, 8080); /* the name "http" resolved */
        CHECK_INT(c->readiness.period_s, 2);
        CHECK_INT(c->readiness.timeout_s, 1);
        CHECK_INT(c->liveness.failure_threshold, 5);
        CHECK(!c->startup.set);
        CHECK_INT(c->cpu_request_millis, 250);
        CHECK_INT(c->memory_limit_bytes, 128 << 20);
        CHECK_INT(c->nmounts, 1);
        CHECK_STR(c->mounts[0].mount_path, "/var/run/secrets/jwt");
        CHECK_STR(c->mounts[0].secret_name, "auth-jwt-keys");
    }
    const struct model_deployment *v2 = model_deployment(m, "order-svc-v2");
    CHECK(v2 && v2->replicas == 1 && v2->max_surge.percent && v2->max_surge.value == 25);
    CHECK(v2 && v2->termination_grace_s == 30);
    CHECK(v2 && strcmp(v2->template_hash, o->template_hash) != 0);
    const struct model_deployment *gw = model_deployment(m, "gateway");
    CHECK(gw && gw->is_gateway && !gw->inject_sidecar);
    const struct model_service *s = model_service(m, "order-svc");
    CHECK(s && s->nports == 1 && s->ports[0].port == 80 && s->ports[0].target_port == 8080);
    CHECK(s && s->ports[0].target_port_name && strcmp(s->ports[0].target_port_name, "http") == 0);
    s = model_service(m, "gateway");
    CHECK(s && s->nports == 2 && s->ports[1].target_port == 8443);
    CHECK(model_service(m, "nope") == NULL);
    model_free(m);
    model_diag_free(&d);
}

static void test_fixture_config(void)
{
    struct model_diag d;
    struct model *m = load_fixtures(&d);
    if (!m)
        return;
    const struct model_configmap *cm = model_configmap(m, "order-config");
    CHECK(cm && cm->ndata == 2);
    CHECK(cm && strcmp(cm->data[1].value, "on") == 0);
    const struct model_secret *s = model_secret(m, "api-keys");
    CHECK(s && !s->generated && s->ndata == 2);
    if (s) {
        CHECK_STR(s->data[0].key, "token");
        CHECK_STR(s->data[0].value, "secret-token");
        CHECK_STR(s->data[1].value, "hello");
    }
    CHECK_INT(m->ndatabases, 2);
    CHECK(m->databases[0].engine == MODEL_DB_POSTGRESQL);
    CHECK(m->databases[1].engine == MODEL_DB_REDIS);
    s = model_secret(m, "order-db");
    CHECK(s && s->generated && s->ndata == 6);
    s = model_secret(m, "sessions-redis");
    CHECK(s && s->generated && s->ndata == 1 && strcmp(s->data[0].key, "url") == 0);
    CHECK_INT(m->ngenerated_secrets, 1);
    CHECK_STR(m->generated_secrets[0].keys[0].value, "ec-p256-private-key");
    s = model_secret(m, "auth-jwt-keys");
    CHECK(s && s->generated && s->ndata == 2);
    CHECK_INT(m->nsecrets, 4);
    CHECK_INT(strlen(m->digest), 64);
    model_free(m);
    model_diag_free(&d);
}

static void test_fixture_mesh(void)
{
    struct model_diag d;
    struct model *m = load_fixtures(&d);
    if (!m)
        return;
    const struct model_destinationrule *dr = model_destinationrule(m, "order-svc");
    CHECK(dr != NULL);
    if (dr) {
        CHECK(dr->lb == MODEL_LB_LEAST_REQUEST);
        CHECK_INT(dr->max_connections, 100);
        CHECK_INT(dr->max_pending_requests, 50);
        CHECK_INT(dr->max_requests, 200);
        CHECK_INT(dr->max_retries, 3);
        CHECK(dr->outlier);
        CHECK_INT(dr->consecutive_5xx, 5);
        CHECK_INT(dr->consecutive_gateway_errors, -1);
        CHECK_INT(dr->interval_ms, 10000);
        CHECK_INT(dr->base_ejection_ms, 30000);
        CHECK_INT(dr->max_ejection_percent, 50);
        CHECK_INT(dr->nsubsets, 2);
        CHECK_STR(dr->subsets[1].name, "v2");
    }
    CHECK_INT(m->nvirtualservices, 2);
    const struct model_virtualservice *vs = &m->virtualservices[0];
    CHECK_STR(vs->hosts[0], "order-svc");
    CHECK_INT(vs->nhttp, 2);
    CHECK_STR(vs->http[0].name, "canary");
    CHECK(vs->http[0].matches[0].uri.kind == MODEL_MATCH_PREFIX);
    CHECK_STR(vs->http[0].matches[0].uri.value, "/v1/orders");
    CHECK(vs->http[0].matches[0].method.kind == MODEL_MATCH_EXACT);
    CHECK_INT(vs->http[0].matches[0].nheaders, 1);
    CHECK_STR(vs->http[0].matches[0].headers[0].name, "x-canary");
    CHECK_STR(vs->http[0].route[0].host, "order-svc");
    CHECK_INT(vs->http[0].route[0].weight, 100);
    CHECK_INT(vs->http[0].retry_attempts, -1);
    const struct model_http_route *r = &vs->http[1];
    CHECK_INT(r->nmatches, 0);
    CHECK_INT(r->nroute, 2);
    CHECK_INT(r->route[0].weight, 90);
    CHECK_INT(r->route[0].port, 80);
    CHECK_STR(r->route[1].subset, "v2");
    CHECK_INT(r->timeout_ms, 5000);
    CHECK_INT(r->retry_attempts, 2);
    CHECK_INT(r->per_try_timeout_ms, 1500);
    CHECK_STR(r->retry_on, "5xx,connect-failure");
    CHECK_INT(r->fault_delay_ms, 100);
    CHECK_INT(r->fault_delay_percent, 3); /* 2.5 rounded */
    vs = &m->virtualservices[1];
    CHECK_STR(vs->hosts[0], "user-svc");
    CHECK(vs->http[0].has_mirror);
    CHECK_STR(vs->http[0].mirror.host, "user-svc");
    CHECK_INT(vs->http[0].mirror_percent, 10);
    CHECK_STR(vs->http[0].rewrite_uri, "/v2/");
    CHECK_INT(m->npeerauths, 1);
    CHECK(!m->peerauths[0].permissive && m->peerauths[0].selector.n == 0);
    CHECK_INT(m->nauthzpolicies, 2);
    CHECK(!m->authzpolicies[0].deny);
    CHECK_INT(m->authzpolicies[0].rules[0].to[0].nmethods, 2);
    CHECK(m->authzpolicies[1].deny);
    CHECK_STR(m->authzpolicies[1].rules[0].from[0].not_request_principals[0], "*");
    CHECK_INT(m->nrequestauths, 1);
    const struct model_jwt_rule *j = &m->requestauths[0].rules[0];
    CHECK_STR(j->issuer, "https://auth.strata.local");
    CHECK_STR(j->audiences[0], "strata");
    CHECK(j->forward_original_token);
    CHECK_INT(j->noutput, 1);
    CHECK_STR(j->output_claim_to_headers[0].key, "sub");
    CHECK_STR(j->output_claim_to_headers[0].value, "x-user-id");
    model_free(m);
    model_diag_free(&d);
}

static void test_fixture_edge(void)
{
    struct model_diag d;
    struct model *m = load_fixtures(&d);
    if (!m)
        return;
    CHECK_INT(m->ningresses, 1);
    const struct model_ingress *in = &m->ingresses[0];
    CHECK_INT(in->nrules, 1);
    CHECK(in->rules[0].host == NULL);
    CHECK_INT(in->rules[0].npaths, 2);
    CHECK(!in->rules[0].paths[0].exact);
    CHECK(in->rules[0].paths[1].exact);
    CHECK_STR(in->rules[0].paths[1].service, "user-svc");
    CHECK_INT(in->rules[0].paths[1].service_port, 80);
    CHECK_INT(in->ntls_hosts, 1);
    CHECK_INT(m->npdbs, 2);
    CHECK(m->pdbs[0].min_available.set && m->pdbs[0].min_available.value == 1 && !m->pdbs[0].max_unavailable.set);
    CHECK(m->pdbs[1].max_unavailable.percent && m->pdbs[1].max_unavailable.value == 50);
    CHECK_INT(m->nhpas, 1);
    CHECK_STR(m->hpas[0].target, "order-svc-v1");
    CHECK_INT(m->hpas[0].min_replicas, 2);
    CHECK_INT(m->hpas[0].max_replicas, 4);
    CHECK_INT(m->hpas[0].cpu_utilization, 70);
    CHECK_INT(m->hpas[0].requests_per_second_milli, 500);
    CHECK_INT(m->hpas[0].scale_down_stabilization_s, 60);
    CHECK_INT(m->hpas[0].scale_up_stabilization_s, 0);
    CHECK_INT(m->nratelimits, 1);
    const struct model_ratelimit_rule *rl = m->ratelimits[0].rules;
    CHECK_INT(m->ratelimits[0].nrules, 2);
    CHECK_STR(rl[0].path_prefix, "/v1/auth/login");
    CHECK_INT(rl[0].nmethods, 1);
    CHECK(rl[0].key == MODEL_RL_CLIENT_IP);
    CHECK_INT(rl[0].requests, 10);
    CHECK_INT(rl[0].period_s, 60);
    CHECK_INT(rl[0].burst, 5);
    CHECK(rl[0].global);
    CHECK(rl[1].key == MODEL_RL_HEADER);
    CHECK_STR(rl[1].header, "X-Api-Key");
    CHECK_INT(rl[1].burst, 100);
    CHECK(!rl[1].global);
    CHECK_INT(m->nwafs, 1);
    CHECK(m->wafs[0].detect_only);
    CHECK_INT(m->wafs[0].paranoia, 2);
    CHECK_INT(m->wafs[0].anomaly_threshold, 7);
    CHECK_STR(m->wafs[0].path_prefixes[0], "/v1/");
    /* The fixtures use only implemented fields. */
    if (d.nwarnings)
        print_diag(&d);
    CHECK_INT(d.nwarnings, 0);
    model_free(m);
    model_diag_free(&d);
}

/* ---- digest and template hash --------------------------------------------- */

#define DEPLOY(name, image, extra)                                                                             \
    "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: " name "\nspec:\n  selector:\n"                  \
    "    matchLabels: {app: " name "}\n  template:\n    metadata:\n      labels: {app: " name "}\n"             \
    "    spec:\n      containers:\n      - name: app\n        image: " image "\n" extra

static void test_digest_and_hash(void)
{
    const char *a = DEPLOY("x", "strata/x:dev", "");
    const char *a_reordered = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: x\nspec:\n  selector:\n"
                              "    matchLabels: {app: x}\n  template:\n    spec:\n      containers:\n"
                              "      - image: strata/x:dev\n        name: app\n    metadata:\n      labels: {app: x}\n";
    const char *b = DEPLOY("x", "strata/x:v2", "");
    struct model *m1 = NULL, *m2 = NULL, *m3 = NULL, *m4 = NULL;
    struct model_diag d1, d2, d3, d4;
    CHECK_INT(load2(a, NULL, &m1, &d1), 0);
    CHECK_INT(load2(a, NULL, &m2, &d2), 0);
    CHECK_INT(load2(a_reordered, NULL, &m3, &d3), 0);
    CHECK_INT(load2(b, NULL, &m4, &d4), 0);
    if (m1 && m2 && m3 && m4) {
        CHECK_STR(m1->digest, m2->digest);
        CHECK(strcmp(m1->digest, m3->digest) != 0);
        CHECK_STR(m1->deployments[0].template_hash, m2->deployments[0].template_hash);
        CHECK_STR(m1->deployments[0].template_hash, m3->deployments[0].template_hash); /* key order is not content */
        CHECK(strcmp(m1->deployments[0].template_hash, m4->deployments[0].template_hash) != 0);
    }
    model_free(m1);
    model_free(m2);
    model_free(m3);
    model_free(m4);
    model_diag_free(&d1);
    model_diag_free(&d2);
    model_diag_free(&d3);
    model_diag_free(&d4);
}

/* ---- errors in one object ------------------------------------------------- */

static void test_errors_syntax_and_kind(void)
{
    FAILS("a: [1, 2\n", "a.yaml:");
    FAILS("kind: Deployment\nmetadata: {name: x}\n", "a.yaml:1:1: apiVersion: required field is missing");
    FAILS("apiVersion: v1\nmetadata: {name: x}\n", "a.yaml:1:1: kind: required field is missing");
    FAILS("apiVersion: v1\nkind: Pod\nmetadata: {name: x}\n", "a.yaml:2:7: kind: unknown kind \"Pod\"");
    FAILS("apiVersion: apps/v1beta1\nkind: Deployment\nmetadata: {name: x}\n",
          "a.yaml:1:13: apiVersion: unknown apiVersion \"apps/v1beta1\" for kind Deployment (expected apps/v1)");
    FAILS("- 1\n- 2\n", "a.yaml:1:1: expected a mapping (a Kubernetes object), got a sequence");
    FAILS("apiVersion: v1\nkind: ConfigMap\nmetadata: {namespace: default}\n",
          "a.yaml:3:11: metadata.name: required field is missing");
    FAILS("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: Bad_Name}\n", "a.yaml:3:18: metadata.name: invalid name");
}

static void test_errors_deployment(void)
{
    FAILS(DEPLOY("x", "strata/x:dev", "") "  replicas: three\n", "spec.replicas: expected an integer, got \"three\"");
    FAILS("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  replicas: -1\n"
          "  selector: {matchLabels: {app: x}}\n  template:\n    metadata: {labels: {app: x}}\n"
          "    spec: {containers: [{name: a, image: 'x:1'}]}\n",
          "a.yaml:5:13: spec.replicas: must be between 0 and 1000, got -1");
    FAILS("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n"
          "  template:\n    metadata: {labels: {app: x}}\n    spec: {containers: [{name: a, image: 'x:1'}]}\n",
          "a.yaml:5:3: spec.selector: required field is missing");
    FAILS("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  selector: {matchLabels: {app: y}}\n"
          "  template:\n    metadata: {labels: {app: x}}\n    spec: {containers: [{name: a, image: 'x:1'}]}\n",
          "a.yaml:5:27: spec.selector.matchLabels: does not match the template's labels");
    FAILS("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  selector: {matchLabels: {app: x}}\n"
          "  template:\n    metadata: {labels: {app: x}}\n    spec: {serviceAccountName: x}\n",
          "a.yaml:8:11: spec.template.spec.containers: required field is missing");
    FAILS(DEPLOY("x", "strata/x", ""), "a.yaml:14:16: spec.template.spec.containers[0].image: expected an image as name:tag");
    FAILS("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  selector: {matchLabels: {app: x}}\n"
          "  template:\n    metadata: {labels: {app: x}}\n    spec: {containers: [{name: a}]}\n",
          "spec.template.spec.containers[0].image: required field is missing");
    FAILS(DEPLOY("x", "x:1", "        ports: [{containerPort: 70000}]\n"),
          "a.yaml:15:33: spec.template.spec.containers[0].ports[0].containerPort: must be between 1 and 65535, got 70000");
    FAILS(DEPLOY("x", "x:1", "        readinessProbe: {httpGet: {port: web}}\n"),
          "spec.template.spec.containers[0].readinessProbe.httpGet.port: no containerPort named \"web\"");
    FAILS(DEPLOY("x", "x:1", "        env: [{name: A, value: 1}]\n"),
          "spec.template.spec.containers[0].env[0].value: expected a string, got integer 1");
    FAILS(DEPLOY("x", "x:1", "        readinessProbe: {httpGet: {port: 80}, periodSeconds: 5x}\n"),
          "readinessProbe.periodSeconds: expected an integer");
    FAILS(DEPLOY("x", "x:1", "  strategy: {rollingUpdate: {maxSurge: 120%}}\n"),
          "spec.strategy.rollingUpdate.maxSurge: expected an integer or a percentage");
    FAILS(DEPLOY("x", "x:1", "        volumeMounts: [{name: v, mountPath: /x}]\n"),
          "volumeMounts[0].name: no volume named \"v\"");
}

static void test_errors_other_kinds(void)
{
    FAILS("apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n  ports: [{port: 0}]\n",
          "a.yaml:5:3: spec.selector: required field is missing",
          "a.yaml:5:18: spec.ports[0].port: must be between 1 and 65535, got 0");
    FAILS("apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata: {k: '!!notbase64'}\n",
          "a.yaml:4:11: data.k: invalid base64");
    FAILS("apiVersion: networking.istio.io/v1beta1\nkind: VirtualService\nmetadata: {name: v}\nspec:\n"
          "  hosts: [s]\n  http:\n  - route:\n    - destination: {host: s, subset: a}\n      weight: 60\n"
          "    - destination: {host: s, subset: b}\n      weight: 30\n",
          "a.yaml:8:5: spec.http[0].route: weights must add up to 100, got 90");
    FAILS("apiVersion: networking.istio.io/v1beta1\nkind: VirtualService\nmetadata: {name: v}\nspec:\n"
          "  hosts: [s]\n  http:\n  - route: [{destination: {host: s}}]\n    timeout: 5x\n",
          "a.yaml:8:14: spec.http[0].timeout:");
    FAILS("apiVersion: networking.istio.io/v1beta1\nkind: VirtualService\nmetadata: {name: v}\nspec:\n"
          "  hosts: [s]\n  http:\n  - route: [{destination: {host: s}}]\n"
          "    fault: {abort: {httpStatus: 503, percentage: {value: \"10%\"}}}\n",
          "spec.http[0].fault.abort.percentage.value: expected a percentage as a number between 0 and 100, got \"10%\"");
    FAILS("apiVersion: networking.istio.io/v1beta1\nkind: DestinationRule\nmetadata: {name: d}\nspec:\n"
          "  host: s\n  trafficPolicy: {outlierDetection: {interval: 10}}\n",
          "spec.trafficPolicy.outlierDetection.interval:");
    FAILS("apiVersion: security.istio.io/v1beta1\nkind: PeerAuthentication\nmetadata: {name: p}\nspec:\n"
          "  mtls: {mode: DISABLE}\n",
          "a.yaml:5:16: spec.mtls.mode: DISABLE is refused");
    FAILS("apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: p}\nspec:\n"
          "  minAvailable: 1\n  maxUnavailable: 1\n  selector: {matchLabels: {app: x}}\n",
          "spec.maxUnavailable: minAvailable and maxUnavailable are exclusive");
    FAILS("apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {name: h}\nspec:\n"
          "  scaleTargetRef: {kind: StatefulSet, name: x}\n  maxReplicas: 3\n",
          "a.yaml:5:26: spec.scaleTargetRef.kind: strata scales Deployments only");
    FAILS("apiVersion: strata.dev/v1alpha1\nkind: RateLimitPolicy\nmetadata: {name: r}\nspec:\n"
          "  rules: [{pathPrefix: /x, requests: 10, period: 5x, key: token}]\n",
          "spec.rules[0].period:", "spec.rules[0].key: expected one of clientIP, jwtSubject, header, got \"token\"");
    FAILS("apiVersion: strata.dev/v1alpha1\nkind: WafPolicy\nmetadata: {name: w}\nspec: {paranoiaLevel: 5}\n",
          "spec.paranoiaLevel: must be between 1 and 4, got 5");
    FAILS("apiVersion: strata.dev/v1alpha1\nkind: Database\nmetadata: {name: d}\nspec: {engine: mysql}\n",
          "spec.engine: expected one of postgresql, redis, nats", "spec.secretName: required field is missing");
}

/* Every error of a load is reported, not just the first; nothing is returned. */
static void test_errors_all_collected(void)
{
    struct model *m = (struct model *)1;
    struct model_diag d;
    int rc = load2("apiVersion: v1\nkind: Pod\nmetadata: {name: a}\n---\n"
                   "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {selector: {app: x}, ports: [{port: x}]}\n",
                   "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: 'UPPER'}\n", &m, &d);
    CHECK(rc < 0);
    CHECK(m == NULL);
    CHECK_INT(d.nerrors, 3);
    CHECK(has_line(d.errors, d.nerrors, "a.yaml:2:7: kind: unknown kind"));
    CHECK(has_line(d.errors, d.nerrors, "a.yaml:8:43: spec.ports[0].port:"));
    CHECK(has_line(d.errors, d.nerrors, "b.yaml:3:18: metadata.name: invalid name"));
    model_diag_free(&d);
}

/* ---- errors across resources ---------------------------------------------- */

#define SERVICE(name, app)                                                                                     \
    "apiVersion: v1\nkind: Service\nmetadata: {name: " name "}\nspec:\n  selector: {app: " app "}\n"            \
    "  ports: [{name: http, port: 80, targetPort: 8080}]\n"

static void test_cross_mesh(void)
{
    const char *apps = DEPLOY("user", "strata/user:dev", "") "---\n" SERVICE("user", "user");
    /* a.yaml: the VirtualService; b.yaml: the Deployment and Service */
    FAILS2("apiVersion: networking.istio.io/v1beta1\nkind: VirtualService\nmetadata: {name: v}\nspec:\n"
           "  hosts: [user]\n  http:\n  - route: [{destination: {host: nobody.default.svc.cluster.local}}]\n",
           apps, "a.yaml:7:34: spec.http[0].route[0].destination.host: no Service \"nobody\"");
    FAILS2("apiVersion: networking.istio.io/v1beta1\nkind: VirtualService\nmetadata: {name: v}\nspec:\n"
           "  hosts: [user]\n  http:\n  - route: [{destination: {host: user, subset: v3}}]\n"
           "---\napiVersion: networking.istio.io/v1beta1\nkind: DestinationRule\nmetadata: {name: user}\n"
           "spec:\n  host: user.default.svc.cluster.local\n  subsets: [{name: v1, labels: {app: user}}]\n",
           apps,
           "a.yaml:7:48: spec.http[0].route[0].destination.subset: no DestinationRule for host \"user\" defines "
           "subset \"v3\" (a.yaml:9)");
    FAILS2("apiVersion: networking.istio.io/v1beta1\nkind: VirtualService\nmetadata: {name: v}\nspec:\n"
           "  hosts: [user]\n  http:\n  - route: [{destination: {host: user, port: {number: 81}}}]\n",
           apps, "a.yaml:7:55: spec.http[0].route[0].destination.port.number: Service \"user\" (b.yaml:16) has no port 81");
    FAILS2(SERVICE("orphan", "nothing"), apps, "a.yaml:5:13: spec.selector: selects no Deployment's pods");
    FAILS2("apiVersion: networking.istio.io/v1beta1\nkind: DestinationRule\nmetadata: {name: d}\nspec: {host: ghost}\n",
           apps, "a.yaml:4:14: spec.host: no Service \"ghost\"");
}

static void test_cross_refs(void)
{
    const char *refs = DEPLOY("x", "strata/x:dev",
                              "        env:\n"
                              "        - name: DB\n          valueFrom: {secretKeyRef: {name: x-db, key: uri}}\n"
                              "        - name: CFG\n          valueFrom: {configMapKeyRef: {name: nocm, key: a}}\n"
                              "        - name: K\n          valueFrom: {secretKeyRef: {name: keys, key: b}}\n"
                              "        - name: OPT\n          valueFrom: {secretKeyRef: {name: none, key: b, optional: true}}\n"
                              "      volumes: [{name: v, secret: {secretName: ghost}}]\n");
    FAILS2(refs,
           "apiVersion: strata.dev/v1alpha1\nkind: Database\nmetadata: {name: x-db}\n"
           "spec: {engine: postgresql, secretName: x-db}\n---\n"
           "apiVersion: v1\nkind: Secret\nmetadata: {name: keys}\nstringData: {a: '1'}\n",
           "a.yaml:17:44: spec.template.spec.containers[0].env[0].valueFrom.secretKeyRef.name: Secret \"x-db\" "
           "(b.yaml:1) has no key \"uri\" (generated keys: url, host, port, username, password, database)",
           "a.yaml:19:47: spec.template.spec.containers[0].env[1].valueFrom.configMapKeyRef.name: no ConfigMap \"nocm\"",
           "env[2].valueFrom.secretKeyRef.name: Secret \"keys\" (b.yaml:6) has no key \"b\" (keys: a)",
           "a.yaml:24:48: spec.template.spec.volumes[0].secret.secretName: no Secret \"ghost\"");
}

static void test_cross_workloads(void)
{
    const char *apps = DEPLOY("user", "strata/user:dev", "  replicas: 2\n") "---\n" SERVICE("user", "user");
    FAILS2("apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: p}\nspec:\n"
           "  minAvailable: 3\n  selector: {matchLabels: {app: user}}\n",
           apps, "a.yaml:5:17: spec.minAvailable: 3 can never be satisfied: the selected Deployments have 2 replicas "
                 "in total (Deployment \"user\" at b.yaml:1)");
    FAILS2("apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: p}\nspec:\n"
           "  minAvailable: 100%\n  selector: {matchLabels: {app: user}}\n",
           apps, "a.yaml:5:17: spec.minAvailable: 100% can never be satisfied", "(b.yaml:1)");
    FAILS2("apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: p}\nspec:\n"
           "  minAvailable: 1\n  selector: {matchLabels: {app: other}}\n",
           apps, "a.yaml:6:13: spec.selector: selects no Deployment's pods");
    FAILS2("apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {name: h}\nspec:\n"
           "  scaleTargetRef: {kind: Deployment, name: nobody}\n  maxReplicas: 3\n",
           apps, "a.yaml:5:44: spec.scaleTargetRef.name: no Deployment \"nobody\"");
    FAILS2("apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: i}\nspec:\n  rules:\n  - http:\n"
           "      paths:\n      - {path: /a, pathType: Prefix, backend: {service: {name: user, port: {number: 8080}}}}\n"
           "      - {path: /b, pathType: Prefix, backend: {service: {name: gone, port: {number: 80}}}}\n",
           apps,
           "a.yaml:8:85: spec.rules[0].http.paths[0].backend.service.port.number: Service \"user\" (b.yaml:17) has no port 8080",
           "a.yaml:9:64: spec.rules[0].http.paths[1].backend.service.name: no Service \"gone\"");
    FAILS2(SERVICE("user", "user"), apps, "b.yaml:19:18: metadata.name: duplicate Service \"user\" (also at a.yaml:1)");
    FAILS2("apiVersion: v1\nkind: Secret\nmetadata: {name: db}\n",
           "apiVersion: strata.dev/v1alpha1\nkind: Database\nmetadata: {name: d}\nspec: {engine: redis, secretName: db}\n",
           "b.yaml:4:35: spec.secretName: duplicate Secret \"db\" (also at a.yaml:1)");
}

static void test_targetport_name(void)
{
    const char *apps = DEPLOY("user", "strata/user:dev", "        ports: [{name: web, containerPort: 9000}]\n");
    const char *svc = "apiVersion: v1\nkind: Service\nmetadata: {name: user}\nspec:\n  selector: {app: user}\n"
                      "  ports: [{port: 80, targetPort: web}]\n";
    struct model *m = NULL;
    struct model_diag d;
    CHECK_INT(load2(apps, svc, &m, &d), 0);
    if (m)
        CHECK_INT(m->services[0].ports[0].target_port, 9000);
    model_free(m);
    model_diag_free(&d);
    const char *bad = "apiVersion: v1\nkind: Service\nmetadata: {name: user}\nspec:\n  selector: {app: user}\n"
                      "  ports: [{port: 80, targetPort: grpc}]\n";
    FAILS2(apps, bad, "b.yaml:6:34: spec.ports[0].targetPort: no containerPort named \"grpc\" in Deployment \"user\" (a.yaml:1)");
}

/* ---- warnings -------------------------------------------------------------- */

static void test_warnings(void)
{
    const char *text = DEPLOY("x", "x:1",
                              "        imagePullPolicy: Always\n"
                              "        securityContext: {runAsUser: 1000}\n"
                              "      nodeSelector: {disk: ssd}\n") "  paused: true\n";
    struct model *m = NULL;
    struct model_diag d;
    int rc = load2(text, NULL, &m, &d);
    CHECK_INT(rc, 0);
    CHECK(m != NULL);
    CHECK_INT(d.nerrors, 0);
    CHECK_INT(d.nwarnings, 3);
    CHECK(has_line(d.warnings, d.nwarnings,
                   "a.yaml:16:9: spec.template.spec.containers[0].securityContext: not implemented by strata (ignored)"));
    CHECK(has_line(d.warnings, d.nwarnings, "a.yaml:17:7: spec.template.spec.nodeSelector: not implemented by strata"));
    CHECK(has_line(d.warnings, d.nwarnings, "a.yaml:18:3: spec.paused: not implemented by strata"));
    CHECK(!has_line(d.warnings, d.nwarnings, "imagePullPolicy"));
    if (d.nwarnings != 3)
        print_diag(&d);
    model_free(m);
    model_diag_free(&d);

    /* Warnings are kept when there are errors too. */
    rc = load2(DEPLOY("x", "x:1", "") "  replicas: -5\n  paused: true\n", NULL, &m, &d);
    CHECK(rc < 0);
    CHECK_INT(d.nerrors, 1);
    CHECK(has_line(d.warnings, d.nwarnings, "spec.paused: not implemented"));
    model_diag_free(&d);
}

/* ---- files and the reference system ---------------------------------------- */

static void test_files_and_dir_errors(void)
{
    struct model *m = (struct model *)1;
    struct model_diag d;
    const char *missing[] = { "/nonexistent/x.yaml" };
    CHECK(model_load_files(missing, 1, &m, &d) < 0);
    CHECK(m == NULL);
    CHECK(has_line(d.errors, d.nerrors, "/nonexistent/x.yaml: cannot read"));
    model_diag_free(&d);
    CHECK(model_load_dir("/nonexistent-dir", &m, &d) < 0);
    CHECK(d.nerrors == 1);
    model_diag_free(&d);
    /* An empty set of manifests is a valid, empty model. */
    CHECK_INT(model_load_files(NULL, 0, &m, &d), 0);
    CHECK(m && m->ndeployments == 0 && strlen(m->digest) == 64);
    model_free(m);
    model_diag_free(&d);
}

static void test_deploy_dir(void)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/deploy", source_dir());
    DIR *dd = opendir(dir);
    size_t nyaml = 0;
    struct dirent *e;
    while (dd && (e = readdir(dd))) {
        size_t n = strlen(e->d_name);
        if ((n > 5 && strcmp(e->d_name + n - 5, ".yaml") == 0) || (n > 4 && strcmp(e->d_name + n - 4, ".yml") == 0))
            nyaml++;
    }
    if (dd)
        closedir(dd);
    if (nyaml == 0) {
        fprintf(stderr, "note: %s has no YAML yet: the reference-system check is skipped\n", dir);
        return;
    }
    struct model *m = NULL;
    struct model_diag d;
    int rc = model_load_dir(dir, &m, &d);
    if (rc != 0 || d.nwarnings)
        print_diag(&d);
    CHECK_INT(rc, 0);
    CHECK_INT(d.nerrors, 0);
    CHECK(m && m->ndeployments > 0);
    model_free(m);
    model_diag_free(&d);
}

int main(void)
{
    RUN(test_fixture_workloads);
    RUN(test_fixture_config);
    RUN(test_fixture_mesh);
    RUN(test_fixture_edge);
    RUN(test_digest_and_hash);
    RUN(test_errors_syntax_and_kind);
    RUN(test_errors_deployment);
    RUN(test_errors_other_kinds);
    RUN(test_errors_all_collected);
    RUN(test_cross_mesh);
    RUN(test_cross_refs);
    RUN(test_cross_workloads);
    RUN(test_targetport_name);
    RUN(test_warnings);
    RUN(test_files_and_dir_errors);
    RUN(test_deploy_dir);
    return check_done();
}
