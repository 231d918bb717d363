/* model_validate.c — checks across resources, run once every object has
 * decoded without error and before anything is applied. Each error sits at
 * the referring field and names the other object's file:line when there is
 * one. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "control/model_internal.h"

/* The node at a path below an object's root (the root itself when the path
 * cannot be followed: the message is still located in the right object). */
static const struct cfg_node *at(const struct cfg_node *root, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static const struct cfg_node *at(const struct cfg_node *root, const char *fmt, ...)
{
    char path[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(path, sizeof path, fmt, ap);
    va_end(ap);
    const struct cfg_node *n = cfg_get(root, path);
    return n ? n : root;
}

/* ---- duplicates ----------------------------------------------------------- */

#define CHECK_DUPS(arr, count, K, field, what)                                                              \
    for (size_t i_ = 0; i_ < m->count; i_++)                                                                \
        for (size_t j_ = 0; j_ < i_; j_++)                                                                  \
            if (m->arr[i_].field && m->arr[j_].field && strcmp(m->arr[i_].field, m->arr[j_].field) == 0) {   \
                model_err(c, at(c->roots[K][i_], "metadata.name"),          \
                          "duplicate " what " \"%s\" (also at %s:%d)", m->arr[i_].field, m->arr[j_].loc.file, \
                          m->arr[j_].loc.line);                                                             \
                break;                                                                                      \
            }

static void check_duplicates(struct mctx *c)
{
    struct model *m = c->m;
    CHECK_DUPS(deployments, ndeployments, MK_DEPLOYMENT, name, "Deployment")
    CHECK_DUPS(services, nservices, MK_SERVICE, name, "Service")
    CHECK_DUPS(configmaps, nconfigmaps, MK_CONFIGMAP, name, "ConfigMap")
    CHECK_DUPS(ingresses, ningresses, MK_INGRESS, name, "Ingress")
    CHECK_DUPS(virtualservices, nvirtualservices, MK_VIRTUALSERVICE, name, "VirtualService")
    CHECK_DUPS(destinationrules, ndestinationrules, MK_DESTINATIONRULE, name, "DestinationRule")
    CHECK_DUPS(peerauths, npeerauths, MK_PEERAUTH, name, "PeerAuthentication")
    CHECK_DUPS(authzpolicies, nauthzpolicies, MK_AUTHZ, name, "AuthorizationPolicy")
    CHECK_DUPS(requestauths, nrequestauths, MK_REQUESTAUTH, name, "RequestAuthentication")
    CHECK_DUPS(pdbs, npdbs, MK_PDB, name, "PodDisruptionBudget")
    CHECK_DUPS(hpas, nhpas, MK_HPA, name, "HorizontalPodAutoscaler")
    CHECK_DUPS(ratelimits, nratelimits, MK_RATELIMIT, name, "RateLimitPolicy")
    CHECK_DUPS(wafs, nwafs, MK_WAF, name, "WafPolicy")
    CHECK_DUPS(databases, ndatabases, MK_DATABASE, name, "Database")
    CHECK_DUPS(generated_secrets, ngenerated_secrets, MK_GENERATED_SECRET, name, "GeneratedSecret")
    /* Secrets: explicit ones and those a Database or GeneratedSecret declares. */
    for (size_t i = 0; i < m->nsecrets; i++)
        for (size_t j = 0; j < i; j++)
            if (strcmp(m->secrets[i].name, m->secrets[j].name) == 0) {
                const struct cfg_node *root = c->roots[MK_SECRET][i];
                const char *field = m->secrets[i].generated && cfg_get(root, "spec.secretName") ? "spec.secretName"
                                                                                                : "metadata.name";
                model_err(c, at(root, "%s", field), "duplicate Secret \"%s\" (also at %s:%d)", m->secrets[i].name,
                          m->secrets[j].loc.file, m->secrets[j].loc.line);
                break;
            }
    for (size_t i = 0; i < m->ndestinationrules; i++)
        for (size_t j = 0; j < i; j++)
            if (strcmp(m->destinationrules[i].host, m->destinationrules[j].host) == 0) {
                model_err(c, at(c->roots[MK_DESTINATIONRULE][i], "spec.host"),
                          "a second DestinationRule for host \"%s\" (the first is at %s:%d)",
                          m->destinationrules[i].host, m->destinationrules[j].loc.file,
                          m->destinationrules[j].loc.line);
                break;
            }
}

/* ---- Services ------------------------------------------------------------- */

/* The containerPort named name in a Deployment's containers, or 0. */
static int named_port(struct mctx *c, size_t di, const char *name)
{
    const struct cfg_node *cts = cfg_get(c->roots[MK_DEPLOYMENT][di], "spec.template.spec.containers");
    for (size_t i = 0; i < cfg_count(cts); i++) {
        const struct cfg_node *ports = cfg_map_get(cfg_seq_item(cts, i), "ports");
        for (size_t k = 0; k < cfg_count(ports); k++) {
            const char *n = scalar_or_null(cfg_map_get(cfg_seq_item(ports, k), "name"));
            const char *v = scalar_or_null(cfg_map_get(cfg_seq_item(ports, k), "containerPort"));
            if (n && v && strcmp(n, name) == 0)
                return atoi(v);
        }
    }
    return 0;
}

static void check_services(struct mctx *c)
{
    struct model *m = c->m;
    for (size_t i = 0; i < m->nservices; i++) {
        struct model_service *s = &m->services[i];
        const struct cfg_node *root = c->roots[MK_SERVICE][i];
        size_t first = m->ndeployments;
        for (size_t d = 0; d < m->ndeployments; d++)
            if (model_labels_match(&s->selector, &m->deployments[d].pod_labels)) {
                first = d;
                break;
            }
        if (first == m->ndeployments) {
            model_err(c, at(root, "spec.selector"), "selects no Deployment's pods (no pod template has these labels)");
            continue;
        }
        for (size_t p = 0; p < s->nports; p++) {
            if (!s->ports[p].target_port_name)
                continue;
            int port = named_port(c, first, s->ports[p].target_port_name);
            if (!port)
                model_err(c, at(root, "spec.ports[%zu].targetPort", p),
                          "no containerPort named \"%s\" in Deployment \"%s\" (%s:%d)", s->ports[p].target_port_name,
                          m->deployments[first].name, m->deployments[first].loc.file, m->deployments[first].loc.line);
            else
                s->ports[p].target_port = port;
        }
    }
}

static bool service_has_port(const struct model_service *s, int port)
{
    for (size_t i = 0; i < s->nports; i++)
        if (s->ports[i].port == port)
            return true;
    return false;
}

/* ---- VirtualServices and DestinationRules --------------------------------- */

static void check_dest(struct mctx *c, const struct cfg_node *root, const char *path,
                       const struct model_route_dest *d)
{
    const struct model *m = c->m;
    if (!d->host)
        return;
    const struct model_service *s = model_service(m, d->host);
    if (!s) {
        model_err(c, at(root, "%s.host", path), "no Service \"%s\" (a destination host must be a Service)", d->host);
        return;
    }
    if (d->port && !service_has_port(s, d->port))
        model_err(c, at(root, "%s.port.number", path), "Service \"%s\" (%s:%d) has no port %d", s->name, s->loc.file,
                  s->loc.line, d->port);
    if (!d->subset)
        return;
    const struct model_destinationrule *dr = model_destinationrule(m, d->host);
    if (!dr) {
        model_err(c, at(root, "%s.subset", path), "no DestinationRule for host \"%s\" defines subset \"%s\" "
                  "(there is no DestinationRule for that host)", d->host, d->subset);
        return;
    }
    for (size_t i = 0; i < dr->nsubsets; i++)
        if (strcmp(dr->subsets[i].name, d->subset) == 0)
            return;
    model_err(c, at(root, "%s.subset", path), "no DestinationRule for host \"%s\" defines subset \"%s\" (%s:%d)",
              d->host, d->subset, dr->loc.file, dr->loc.line);
}

static void check_virtualservices(struct mctx *c)
{
    const struct model *m = c->m;
    char path[128];
    for (size_t i = 0; i < m->nvirtualservices; i++) {
        const struct model_virtualservice *vs = &m->virtualservices[i];
        const struct cfg_node *root = c->roots[MK_VIRTUALSERVICE][i];
        for (size_t h = 0; h < vs->nhttp; h++) {
            for (size_t r = 0; r < vs->http[h].nroute; r++) {
                snprintf(path, sizeof path, "spec.http[%zu].route[%zu].destination", h, r);
                check_dest(c, root, path, &vs->http[h].route[r]);
            }
            if (vs->http[h].has_mirror) {
                snprintf(path, sizeof path, "spec.http[%zu].mirror", h);
                check_dest(c, root, path, &vs->http[h].mirror);
            }
        }
        if (vs->ngateways == 0)
            for (size_t h = 0; h < vs->nhosts; h++)
                if (!model_service(m, vs->hosts[h]))
                    model_warn(c, at(root, "spec.hosts[%zu]", h),
                               "no Service \"%s\": mesh traffic to this host never reaches this VirtualService",
                               vs->hosts[h]);
    }
}

static void check_destinationrules(struct mctx *c)
{
    const struct model *m = c->m;
    for (size_t i = 0; i < m->ndestinationrules; i++) {
        const struct model_destinationrule *dr = &m->destinationrules[i];
        const struct cfg_node *root = c->roots[MK_DESTINATIONRULE][i];
        const struct model_service *s = model_service(m, dr->host);
        if (!s) {
            model_err(c, at(root, "spec.host"), "no Service \"%s\"", dr->host);
            continue;
        }
        for (size_t k = 0; k < dr->nsubsets; k++) {
            bool found = false;
            for (size_t d = 0; d < m->ndeployments && !found; d++)
                found = model_labels_match(&s->selector, &m->deployments[d].pod_labels) &&
                        model_labels_match(&dr->subsets[k].labels, &m->deployments[d].pod_labels);
            if (!found)
                model_warn(c, at(root, "spec.subsets[%zu].labels", k),
                           "subset \"%s\" selects no pod of Service \"%s\" (%s:%d): it has no endpoints",
                           dr->subsets[k].name, s->name, s->loc.file, s->loc.line);
        }
    }
}

/* ---- PDBs and HPAs -------------------------------------------------------- */

static void check_pdbs(struct mctx *c)
{
    const struct model *m = c->m;
    for (size_t i = 0; i < m->npdbs; i++) {
        const struct model_pdb *p = &m->pdbs[i];
        const struct cfg_node *root = c->roots[MK_PDB][i];
        int total = 0;
        const struct model_deployment *first = NULL;
        for (size_t d = 0; d < m->ndeployments; d++)
            if (model_labels_match(&p->selector, &m->deployments[d].pod_labels)) {
                total += m->deployments[d].replicas;
                first = first ? first : &m->deployments[d];
            }
        if (!first) {
            model_err(c, at(root, "spec.selector"), "selects no Deployment's pods");
            continue;
        }
        if (!p->min_available.set)
            continue;
        if (p->min_available.percent && p->min_available.value == 100)
            model_err(c, at(root, "spec.minAvailable"),
                      "100%% can never be satisfied during a disruption: no replica of Deployment \"%s\" (%s:%d) "
                      "could ever be stopped voluntarily", first->name, first->loc.file, first->loc.line);
        else if (!p->min_available.percent && p->min_available.value > total)
            model_err(c, at(root, "spec.minAvailable"),
                      "%d can never be satisfied: the selected Deployments have %d replicas in total "
                      "(Deployment \"%s\" at %s:%d)", p->min_available.value, total, first->name, first->loc.file,
                      first->loc.line);
    }
}

static void check_hpas(struct mctx *c)
{
    const struct model *m = c->m;
    for (size_t i = 0; i < m->nhpas; i++)
        if (m->hpas[i].target && !model_deployment(m, m->hpas[i].target))
            model_err(c, at(c->roots[MK_HPA][i], "spec.scaleTargetRef.name"), "no Deployment \"%s\"",
                      m->hpas[i].target);
}

/* ---- references to Secrets and ConfigMaps --------------------------------- */

static bool has_key(const struct model_kv *kv, size_t n, const char *key)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(kv[i].key, key) == 0)
            return true;
    return false;
}

/* A reference from the field at node n to a Secret (is_secret) or ConfigMap
 * name, and key when not NULL. */
static void check_ref(struct mctx *c, const struct cfg_node *n, bool is_secret, const char *name, const char *key,
                      bool optional)
{
    const struct model *m = c->m;
    const struct model_kv *data;
    size_t ndata;
    struct model_loc loc;
    bool generated = false;
    if (is_secret) {
        const struct model_secret *s = model_secret(m, name);
        if (!s) {
            if (!optional)
                model_err(c, n, "no Secret \"%s\" (nor a Database or GeneratedSecret that makes it)", name);
            return;
        }
        data = s->data, ndata = s->ndata, loc = s->loc, generated = s->generated;
    } else {
        const struct model_configmap *cm = model_configmap(m, name);
        if (!cm) {
            if (!optional)
                model_err(c, n, "no ConfigMap \"%s\"", name);
            return;
        }
        data = cm->data, ndata = cm->ndata, loc = cm->loc;
    }
    if (key && !optional && !has_key(data, ndata, key)) {
        char keys[200] = "";
        for (size_t i = 0; i < ndata && strlen(keys) < sizeof keys - 40; i++)
            snprintf(keys + strlen(keys), sizeof keys - strlen(keys), "%s%s", i ? ", " : "", data[i].key);
        model_err(c, n, "%s \"%s\" (%s:%d) has no key \"%s\" (%s: %s)", is_secret ? "Secret" : "ConfigMap", name,
                  loc.file, loc.line, key, generated ? "generated keys" : "keys", ndata ? keys : "none");
    }
}

static void check_deployment_refs(struct mctx *c, size_t di)
{
    const struct model_deployment *d = &c->m->deployments[di];
    const struct cfg_node *root = c->roots[MK_DEPLOYMENT][di];
    const struct cfg_node *cts = cfg_get(root, "spec.template.spec.containers");
    for (size_t i = 0; i < d->ncontainers; i++) {
        const struct model_container *ct = &d->containers[i];
        const struct cfg_node *env = cfg_map_get(cfg_seq_item(cts, i), "env");
        for (size_t e = 0; e < ct->nenv; e++) {
            const struct model_env *ev = &ct->env[e];
            if (!ev->secret_name && !ev->configmap_name)
                continue;
            /* the env item written at ev->loc */
            const struct cfg_node *item = NULL;
            for (size_t k = 0; k < cfg_count(env) && !item; k++)
                if (cfg_line(cfg_seq_item(env, k)) == ev->loc.line &&
                    cfg_column(cfg_seq_item(env, k)) == ev->loc.column)
                    item = cfg_seq_item(env, k);
            const struct cfg_node *n =
                at(item ? item : root, "valueFrom.%s.name", ev->secret_name ? "secretKeyRef" : "configMapKeyRef");
            check_ref(c, n, ev->secret_name != NULL, ev->secret_name ? ev->secret_name : ev->configmap_name, ev->key,
                      ev->optional);
        }
    }
    const struct cfg_node *vols = cfg_get(root, "spec.template.spec.volumes");
    for (size_t v = 0; v < cfg_count(vols); v++) {
        const struct cfg_node *it = cfg_seq_item(vols, v);
        const struct cfg_node *opt;
        bool optional = false;
        const struct cfg_node *sn = cfg_get(it, "secret.secretName"), *cn = cfg_get(it, "configMap.name");
        if (sn && scalar_or_null(sn)) {
            opt = cfg_get(it, "secret.optional");
            optional = opt && scalar_or_null(opt) && strcmp(scalar_or_null(opt), "true") == 0;
            check_ref(c, sn, true, scalar_or_null(sn), NULL, optional);
        }
        if (cn && scalar_or_null(cn)) {
            opt = cfg_get(it, "configMap.optional");
            optional = opt && scalar_or_null(opt) && strcmp(scalar_or_null(opt), "true") == 0;
            check_ref(c, cn, false, scalar_or_null(cn), NULL, optional);
        }
    }
}

/* ---- Ingress -------------------------------------------------------------- */

static void check_ingresses(struct mctx *c)
{
    const struct model *m = c->m;
    for (size_t i = 0; i < m->ningresses; i++) {
        const struct model_ingress *in = &m->ingresses[i];
        const struct cfg_node *root = c->roots[MK_INGRESS][i];
        for (size_t r = 0; r < in->nrules; r++)
            for (size_t p = 0; p < in->rules[r].npaths; p++) {
                struct model_ingress_path *ip = &in->rules[r].paths[p];
                const char *base = "spec.rules[%zu].http.paths[%zu].backend.service";
                char path[128];
                snprintf(path, sizeof path, base, r, p);
                const struct model_service *s = model_service(m, ip->service);
                if (!s) {
                    model_err(c, at(root, "%s.name", path), "no Service \"%s\"", ip->service ? ip->service : "");
                    continue;
                }
                if (ip->service_port_name) {
                    for (size_t k = 0; k < s->nports && !ip->service_port; k++)
                        if (s->ports[k].name && strcmp(s->ports[k].name, ip->service_port_name) == 0)
                            ip->service_port = s->ports[k].port;
                    if (!ip->service_port)
                        model_err(c, at(root, "%s.port.name", path), "Service \"%s\" (%s:%d) has no port named \"%s\"",
                                  s->name, s->loc.file, s->loc.line, ip->service_port_name);
                } else if (!service_has_port(s, ip->service_port)) {
                    model_err(c, at(root, "%s.port.number", path), "Service \"%s\" (%s:%d) has no port %d", s->name,
                              s->loc.file, s->loc.line, ip->service_port);
                }
            }
    }
}

/* ---- selectors of policies ------------------------------------------------ */

static void check_policy_selector(struct mctx *c, const struct model_labels *sel, const struct cfg_node *root)
{
    const struct model *m = c->m;
    if (sel->n == 0)
        return;
    for (size_t d = 0; d < m->ndeployments; d++)
        if (model_labels_match(sel, &m->deployments[d].pod_labels))
            return;
    model_warn(c, at(root, "spec.selector.matchLabels"), "selects no Deployment's pods: the policy applies to nothing");
}

void model_validate(struct mctx *c)
{
    struct model *m = c->m;
    check_duplicates(c);
    check_services(c);
    check_virtualservices(c);
    check_destinationrules(c);
    check_pdbs(c);
    check_hpas(c);
    for (size_t i = 0; i < m->ndeployments; i++)
        check_deployment_refs(c, i);
    check_ingresses(c);
    for (size_t i = 0; i < m->npeerauths; i++)
        check_policy_selector(c, &m->peerauths[i].selector, c->roots[MK_PEERAUTH][i]);
    for (size_t i = 0; i < m->nauthzpolicies; i++)
        check_policy_selector(c, &m->authzpolicies[i].selector, c->roots[MK_AUTHZ][i]);
    for (size_t i = 0; i < m->nrequestauths; i++)
        check_policy_selector(c, &m->requestauths[i].selector, c->roots[MK_REQUESTAUTH][i]);
}
