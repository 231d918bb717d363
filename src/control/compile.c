/* compile.c — the model + live endpoints → one proxy's config document
 * (docs/gateway.md, docs/mesh.md). This file holds the entry point, the
 * sidecar's own parts (identity, app, listeners) and the shared helpers;
 * clusters, routes, policies and the gateway live in compile_*.c.
 *
 * Determinism: everything is emitted in model order (the model keeps file
 * order, files sorted by name) and endpoints sorted by replica name, so equal
 * inputs give byte-identical json_dumps output. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "control/compile_internal.h"

int cc_fail(struct cc *c, const char *fmt, ...)
{
    if (c->failed)
        return -1;
    c->failed = true;
    if (!fmt) {
        snprintf(c->err, c->errsz, "out of memory");
        return -1;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err, c->errsz, fmt, ap);
    va_end(ap);
    return -1;
}

void cc_put(struct cc *c, json_t *obj, const char *key, json_t *v)
{
    /* json_object_set_new takes v even on failure (NULL obj included). */
    if (json_object_set_new(obj, key, v) < 0)
        cc_fail(c, NULL);
}

void cc_push(struct cc *c, json_t *arr, json_t *v)
{
    if (json_array_append_new(arr, v) < 0)
        cc_fail(c, NULL);
}

void cc_put_str(struct cc *c, json_t *obj, const char *key, const char *s)
{
    json_t *v = json_string(s ? s : "");
    if (!v) {
        cc_fail(c, "%s: not valid UTF-8, or out of memory", key);
        json_decref(v);
        return;
    }
    cc_put(c, obj, key, v);
}

void cc_put_int(struct cc *c, json_t *obj, const char *key, long long v)
{
    cc_put(c, obj, key, json_integer(v));
}

json_t *cc_strings(struct cc *c, const char *const *v, size_t n)
{
    if (n == 0)
        return NULL;
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++)
        cc_push(c, a, json_string(v[i] ? v[i] : ""));
    if (!a)
        cc_fail(c, NULL);
    return a;
}

json_t *cc_labels(struct cc *c, const struct model_labels *l)
{
    json_t *o = json_object();
    /* 32: the proxy refuses more labels on an endpoint or subset. */
    for (size_t i = 0; l && i < l->n && i < 32; i++)
        cc_put_str(c, o, l->items[i].key, l->items[i].value);
    if (!o)
        cc_fail(c, NULL);
    return o;
}

const char *cc_label(const struct model_labels *l, const char *key)
{
    for (size_t i = 0; l && i < l->n; i++)
        if (l->items[i].key && !strcmp(l->items[i].key, key))
            return l->items[i].value;
    return NULL;
}

bool cc_labels_match(const struct model_labels *sel, const struct model_labels *labels)
{
    if (!sel || sel->n == 0)
        return false;
    for (size_t i = 0; i < sel->n; i++) {
        const char *v = cc_label(labels, sel->items[i].key);
        if (!v || !sel->items[i].value || strcmp(v, sel->items[i].value))
            return false;
    }
    return true;
}

bool cc_ns_eq(const char *a, const char *b)
{
    return !strcmp(a ? a : "default", b ? b : "default");
}

bool cc_selects(const struct cc *c, const char *ns, const struct model_labels *sel)
{
    if (!cc_ns_eq(ns, c->ns))
        return false;
    return sel->n == 0 || cc_labels_match(sel, &c->p->deployment->pod_labels);
}

const struct model_service *cc_service(const struct cc *c, const char *name)
{
    for (size_t i = 0; name && i < c->m->nservices; i++)
        if (!strcmp(c->m->services[i].name, name))
            return &c->m->services[i];
    return NULL;
}

const struct model_destinationrule *cc_destinationrule(const struct cc *c, const char *host)
{
    for (size_t i = 0; host && i < c->m->ndestinationrules; i++)
        if (c->m->destinationrules[i].host && !strcmp(c->m->destinationrules[i].host, host))
            return &c->m->destinationrules[i];
    return NULL;
}

static bool vs_bound_to_mesh(const struct model_virtualservice *vs)
{
    if (vs->ngateways == 0)
        return true;
    for (size_t i = 0; i < vs->ngateways; i++)
        if (vs->gateways[i] && !strcmp(vs->gateways[i], "mesh"))
            return true;
    return false;
}

const struct model_virtualservice *cc_virtualservice(const struct cc *c, const char *host, bool mesh_only)
{
    for (size_t i = 0; i < c->m->nvirtualservices; i++) {
        const struct model_virtualservice *vs = &c->m->virtualservices[i];
        if (mesh_only && !vs_bound_to_mesh(vs))
            continue;
        for (size_t j = 0; j < vs->nhosts; j++)
            if (vs->hosts[j] && !strcmp(vs->hosts[j], host))
                return vs;
    }
    return NULL;
}

void cc_spiffe_id(const struct cc *c, const char *ns, const char *sa, char *buf, size_t n)
{
    snprintf(buf, n, "spiffe://%s/ns/%s/sa/%s", c->p->trust_domain ? c->p->trust_domain : "strata.local",
             ns ? ns : "default", sa ? sa : "default");
}

static int cmp_str(const char *a, const char *b)
{
    return strcmp(a ? a : "", b ? b : "");
}

static int cmp_endpoint(const void *a, const void *b)
{
    const struct compile_endpoint *x = *(const struct compile_endpoint *const *)a;
    const struct compile_endpoint *y = *(const struct compile_endpoint *const *)b;
    int r = cmp_str(x->replica, y->replica);
    return r ? r : cmp_str(x->address, y->address);
}

/* Only ready endpoints with an address are compiled in; sorted so the order
 * the runtime hands them over in never changes the output. */
static int collect_endpoints(struct cc *c, const struct compile_endpoint *eps, size_t neps)
{
    c->eps = calloc(neps + 1, sizeof *c->eps);
    if (!c->eps)
        return cc_fail(c, NULL);
    for (size_t i = 0; i < neps; i++)
        if (eps[i].ready && eps[i].address && eps[i].labels)
            c->eps[c->neps++] = &eps[i];
    qsort(c->eps, c->neps, sizeof *c->eps, cmp_endpoint);
    return 0;
}

/* identity: workload = the app label (else the Deployment's name), our
 * SPIFFE ID, and the pod's topology labels for locality-aware balancing. */
static void put_identity(struct cc *c, json_t *doc)
{
    const struct model_deployment *d = c->p->deployment;
    const char *app = cc_label(&d->pod_labels, "app");
    json_t *id = json_object();
    cc_put_str(c, id, "workload", app ? app : d->name);
    if (c->p->spiffe_id)
        cc_put_str(c, id, "spiffe_id", c->p->spiffe_id);
    const char *region = cc_label(&d->pod_labels, "topology.kubernetes.io/region");
    const char *zone = cc_label(&d->pod_labels, "topology.kubernetes.io/zone");
    if (region)
        cc_put_str(c, id, "region", region);
    if (zone)
        cc_put_str(c, id, "zone", zone);
    cc_put(c, doc, "identity", id);
}

static void put_app(struct cc *c, json_t *doc)
{
    const struct model_deployment *d = c->p->deployment;
    const struct model_probe *rp = d->ncontainers ? &d->containers[0].readiness : NULL;
    const char *path = rp && rp->set && rp->path && rp->path[0] == '/' ? rp->path : "/readyz";
    char url[1100];
    snprintf(url, sizeof url, "http://%s%s", c->p->app_addr, path);
    json_t *app = json_object();
    cc_put_str(c, app, "ready_url", url);
    /* The outbound side serves the app's calls while it shuts down: as long
     * as the runtime lets it live (terminationGracePeriodSeconds). */
    long long wait = d->termination_grace_s > 0 ? (long long)d->termination_grace_s * 1000 : 30000;
    cc_put_int(c, app, "exit_wait_ms", wait > 3600000 ? 3600000 : wait);
    cc_put(c, doc, "app", app);
}

static void put_sidecar_listeners(struct cc *c, json_t *doc)
{
    const struct compile_proxy *p = c->p;
    json_t *ls = json_array();
    json_t *in = json_object();
    cc_put_str(c, in, "name", "inbound");
    cc_put_str(c, in, "address", p->inbound_addr);
    cc_put_str(c, in, "role", "inbound");
    json_t *cert = json_object();
    cc_put_str(c, cert, "cert_file", p->cert_file);
    cc_put_str(c, cert, "key_file", p->key_file);
    json_t *certs = json_array();
    cc_push(c, certs, cert);
    json_t *tls = json_object();
    cc_put(c, tls, "certificates", certs);
    cc_put(c, in, "tls", tls);
    json_t *mtls = json_object();
    cc_put_str(c, mtls, "mode", cc_mtls_permissive(c) ? "PERMISSIVE" : "STRICT");
    cc_put_str(c, mtls, "ca_file", p->ca_file);
    cc_put(c, in, "mtls", mtls);
    cc_push(c, ls, in);
    if (p->outbound_addr) {
        json_t *out = json_object();
        cc_put_str(c, out, "name", "outbound");
        cc_put_str(c, out, "address", p->outbound_addr);
        cc_put_str(c, out, "role", "outbound");
        cc_push(c, ls, out);
    }
    cc_put(c, doc, "listeners", ls);
}

static void sidecar(struct cc *c, json_t *doc)
{
    const struct compile_proxy *p = c->p;
    if (!p->inbound_addr || !p->app_addr || !p->cert_file || !p->key_file || !p->ca_file) {
        cc_fail(c, "%s: a sidecar needs app_addr, inbound_addr, cert_file, key_file and ca_file",
                p->id ? p->id : "proxy");
        return;
    }
    put_identity(c, doc);
    put_app(c, doc);
    put_sidecar_listeners(c, doc);

    json_t *clusters = json_array();
    json_t *app = json_object();
    cc_put_str(c, app, "name", c->app_cluster);
    json_t *eps = json_array();
    cc_push(c, eps, json_string(p->app_addr));
    cc_put(c, app, "endpoints", eps);
    cc_push(c, clusters, app);
    cc_service_clusters(c, clusters);
    cc_put(c, doc, "clusters", clusters);

    cc_authorization(c, doc);

    json_t *routes = json_array();
    json_t *in = json_object();
    cc_put_str(c, in, "name", "inbound");
    cc_put(c, in, "listeners", json_pack("[s]", "inbound"));
    cc_put_str(c, in, "prefix", "/");
    cc_put_str(c, in, "cluster", c->app_cluster);
    cc_push(c, routes, in);
    if (p->outbound_addr)
        cc_outbound_routes(c, routes, "outbound");
    cc_put(c, doc, "routes", routes);
}

json_t *compile_proxy_config(const struct model *m, const struct compile_endpoint *eps, size_t neps,
                             const struct compile_proxy *p, const char *version, char *err, size_t errsz)
{
    char dummy[1];
    struct cc c = { .m = m, .p = p, .err = err ? err : dummy, .errsz = err ? errsz : sizeof dummy };
    if (c.errsz)
        c.err[0] = '\0';
    if (!m || !p || !p->deployment) {
        cc_fail(&c, "compile: no model, proxy or deployment");
        return NULL;
    }
    if (version && strlen(version) > 128) {
        cc_fail(&c, "compile: version: longer than the proxy's 128 characters");
        return NULL;
    }
    c.ns = p->deployment->namespace;
    c.app_cluster = cc_service(&c, CC_APP_CLUSTER) ? "local-app" : CC_APP_CLUSTER;
    json_t *doc = json_object();
    if (!doc || collect_endpoints(&c, eps, neps) < 0) {
        cc_fail(&c, NULL);
        json_decref(doc);
        free(c.eps);
        return NULL;
    }
    cc_put_str(&c, doc, "version", version ? version : "");
    if (p->admin_addr) {
        json_t *admin = json_object();
        cc_put_str(&c, admin, "address", p->admin_addr);
        cc_put(&c, doc, "admin", admin);
    }
    if (p->deployment->is_gateway) {
        put_identity(&c, doc);
        cc_gateway(&c, doc);
    } else {
        sidecar(&c, doc);
    }
    free(c.eps);
    if (c.failed) {
        json_decref(doc);
        return NULL;
    }
    return doc;
}
