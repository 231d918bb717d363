/* model_decode_policy.c — the policy kinds: PeerAuthentication,
 * AuthorizationPolicy, RequestAuthentication, PodDisruptionBudget,
 * HorizontalPodAutoscaler, and strata.dev's Database, GeneratedSecret,
 * RateLimitPolicy, WafPolicy. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "control/model_internal.h"

static bool expect_map(struct mctx *c, const struct cfg_node *n)
{
    if (cfg_kind(n) == CFG_MAP)
        return true;
    model_err(c, n, "expected a mapping, got a %s", cfg_kind_name(cfg_kind(n)));
    return false;
}

/* One of names (exact); -1 with an error listing them. */
static int one_of(struct mctx *c, const struct cfg_node *map, const char *key, const char *const *names, int dflt)
{
    const char *v = NULL;
    int rc = dstr(c, map, key, &v);
    if (rc <= 0)
        return rc < 0 ? -1 : dflt;
    char list[200] = "";
    for (int i = 0; names[i]; i++) {
        if (strcmp(names[i], v) == 0)
            return i;
        snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i ? ", " : "", names[i]);
    }
    model_err(c, cfg_map_get(map, key), "expected one of %s, got \"%.40s\"", list, v);
    return -1;
}

/* ---- PeerAuthentication --------------------------------------------------- */

int decode_peerauth(struct mctx *c, const struct cfg_node *spec, struct model_peerauth *pa)
{
    static const char *const modes[] = { "STRICT", "PERMISSIVE", "DISABLE", "UNSET", NULL };
    dselector(c, spec, "selector", false, &pa->selector);
    const struct cfg_node *mtls = dmap(c, spec, "mtls");
    int mode = one_of(c, mtls, "mode", modes, 0);
    pa->permissive = mode == 1;
    if (mode == 2)
        model_err(c, cfg_map_get(mtls, "mode"), "DISABLE is refused: strata requires mTLS between workloads "
                  "(PERMISSIVE also accepts plaintext)");
    return 0;
}

/* ---- AuthorizationPolicy -------------------------------------------------- */

static void decode_source(struct mctx *c, const struct cfg_node *n, struct model_authz_source *s)
{
    dstrs(c, n, "principals", &s->principals, &s->nprincipals);
    dstrs(c, n, "notPrincipals", &s->not_principals, &s->nnot_principals);
    dstrs(c, n, "namespaces", &s->namespaces, &s->nnamespaces);
    dstrs(c, n, "notNamespaces", &s->not_namespaces, &s->nnot_namespaces);
    dstrs(c, n, "requestPrincipals", &s->request_principals, &s->nrequest_principals);
    dstrs(c, n, "notRequestPrincipals", &s->not_request_principals, &s->nnot_request_principals);
}

static void decode_operation(struct mctx *c, const struct cfg_node *n, struct model_authz_op *o)
{
    dstrs(c, n, "methods", &o->methods, &o->nmethods);
    dstrs(c, n, "notMethods", &o->not_methods, &o->nnot_methods);
    dstrs(c, n, "paths", &o->paths, &o->npaths);
    dstrs(c, n, "notPaths", &o->not_paths, &o->nnot_paths);
}

static void decode_authz_rule(struct mctx *c, const struct cfg_node *n, struct model_authz_rule *r)
{
    const struct cfg_node *from = dseq(c, n, "from"), *to = dseq(c, n, "to");
    r->from = model_alloc(c, cfg_count(from) * sizeof *r->from);
    for (size_t i = 0; r->from && i < cfg_count(from); i++) {
        const struct cfg_node *it = cfg_seq_item(from, i), *src;
        if (expect_map(c, it) && (src = dneed(c, it, "source")) && expect_map(c, src))
            decode_source(c, src, &r->from[r->nfrom++]);
    }
    r->to = model_alloc(c, cfg_count(to) * sizeof *r->to);
    for (size_t i = 0; r->to && i < cfg_count(to); i++) {
        const struct cfg_node *it = cfg_seq_item(to, i), *op;
        if (expect_map(c, it) && (op = dneed(c, it, "operation")) && expect_map(c, op))
            decode_operation(c, op, &r->to[r->nto++]);
    }
    const struct cfg_node *when = cfg_map_get(n, "when");
    if (when) {
        model_mark_used(c, when);
        model_warn(c, cfg_map_get(n, "when") ? when : n,
                   "conditions (when) are not implemented by strata: the rule applies without them");
    }
}

int decode_authz(struct mctx *c, const struct cfg_node *spec, struct model_authzpolicy *ap)
{
    static const char *const actions[] = { "ALLOW", "DENY", "AUDIT", "CUSTOM", NULL };
    dselector(c, spec, "selector", false, &ap->selector);
    int action = one_of(c, spec, "action", actions, 0);
    if (action >= 2)
        model_err(c, cfg_map_get(spec, "action"), "only ALLOW and DENY are supported");
    ap->deny = action == 1;
    const struct cfg_node *rules = dseq(c, spec, "rules");
    ap->rules = model_alloc(c, cfg_count(rules) * sizeof *ap->rules);
    for (size_t i = 0; ap->rules && i < cfg_count(rules); i++) {
        const struct cfg_node *it = cfg_seq_item(rules, i);
        if (expect_map(c, it))
            decode_authz_rule(c, it, &ap->rules[ap->nrules++]);
    }
    return 0;
}

/* ---- RequestAuthentication ------------------------------------------------ */

int decode_requestauth(struct mctx *c, const struct cfg_node *spec, struct model_requestauth *ra)
{
    dselector(c, spec, "selector", false, &ra->selector);
    const struct cfg_node *rules = dseq(c, spec, "jwtRules");
    ra->rules = model_alloc(c, cfg_count(rules) * sizeof *ra->rules);
    for (size_t i = 0; ra->rules && i < cfg_count(rules); i++) {
        const struct cfg_node *it = cfg_seq_item(rules, i);
        struct model_jwt_rule *r = &ra->rules[ra->nrules];
        if (!expect_map(c, it))
            continue;
        dstr_need(c, it, "issuer", &r->issuer);
        dstrs(c, it, "audiences", &r->audiences, &r->naudiences);
        if (dstr_need(c, it, "jwksUri", &r->jwks_uri) == 1 && strncmp(r->jwks_uri, "http://", 7) != 0 &&
            strncmp(r->jwks_uri, "https://", 8) != 0)
            model_err(c, cfg_map_get(it, "jwksUri"), "expected an http:// or https:// URL");
        dbool(c, it, "forwardOriginalToken", &r->forward_original_token);
        const struct cfg_node *oc = dseq(c, it, "outputClaimToHeaders");
        r->output_claim_to_headers = model_alloc(c, cfg_count(oc) * sizeof *r->output_claim_to_headers);
        for (size_t k = 0; r->output_claim_to_headers && k < cfg_count(oc); k++) {
            const struct cfg_node *o = cfg_seq_item(oc, k);
            struct model_kv *kv = &r->output_claim_to_headers[r->noutput];
            if (expect_map(c, o) && dstr_need(c, o, "claim", &kv->key) == 1 &&
                dstr_need(c, o, "header", &kv->value) == 1)
                r->noutput++;
        }
        ra->nrules++;
    }
    return 0;
}

/* ---- PodDisruptionBudget -------------------------------------------------- */

int decode_pdb(struct mctx *c, const struct cfg_node *spec, struct model_pdb *p)
{
    dselector(c, spec, "selector", true, &p->selector);
    int a = dintstr(c, spec, "minAvailable", &p->min_available);
    int b = dintstr(c, spec, "maxUnavailable", &p->max_unavailable);
    if (a == 1 && b == 1)
        model_err(c, cfg_map_get(spec, "maxUnavailable"), "minAvailable and maxUnavailable are exclusive");
    else if (a == 0 && b == 0)
        model_err_sub(c, spec, "minAvailable", "required field is missing (or maxUnavailable)");
    return 0;
}

/* ---- HorizontalPodAutoscaler ---------------------------------------------- */

static void decode_metric(struct mctx *c, const struct cfg_node *it, struct model_hpa *h)
{
    static const char *const types[] = { "Resource", "Pods", NULL };
    const struct cfg_node *tn = cfg_map_get(it, "type");
    int type = one_of(c, it, "type", types, -2);
    if (type == -2)
        model_err_sub(c, it, "type", "required field is missing");
    if (type == 0) {
        const struct cfg_node *res = dneed(c, it, "resource");
        const char *name = NULL;
        if (!res || !expect_map(c, res) || dstr_need(c, res, "name", &name) != 1)
            return;
        const struct cfg_node *tg = dneed(c, res, "target");
        if (strcmp(name, "cpu") != 0) {
            model_warn(c, cfg_map_get(res, "name"), "resource metric \"%.40s\" is not implemented by strata "
                       "(only cpu; ignored)", name);
            if (tg)
                model_mark_opaque(c, tg);
            return;
        }
        if (!tg || !expect_map(c, tg))
            return;
        const char *tt = NULL;
        if (dstr_need(c, tg, "type", &tt) == 1 && strcmp(tt, "Utilization") != 0)
            model_err(c, cfg_map_get(tg, "type"), "only Utilization is supported for cpu");
        if (dneed(c, tg, "averageUtilization"))
            dint(c, tg, "averageUtilization", 1, 1000, &h->cpu_utilization);
    } else if (type == 1) {
        const struct cfg_node *pods = dneed(c, it, "pods");
        if (!pods || !expect_map(c, pods))
            return;
        const struct cfg_node *metric = dneed(c, pods, "metric");
        const char *name = NULL;
        if (metric && expect_map(c, metric) && dstr_need(c, metric, "name", &name) == 1 &&
            strcmp(name, "requests_per_second") != 0)
            model_err(c, cfg_map_get(metric, "name"), "only the Pods metric requests_per_second is supported");
        const struct cfg_node *tg = dneed(c, pods, "target");
        const char *tt = NULL;
        if (!tg || !expect_map(c, tg))
            return;
        if (dstr_need(c, tg, "type", &tt) == 1 && strcmp(tt, "AverageValue") != 0)
            model_err(c, cfg_map_get(tg, "type"), "only AverageValue is supported for Pods metrics");
        if (dneed(c, tg, "averageValue"))
            model_quantity_milli(c, tg, "averageValue", &h->requests_per_second_milli);
    }
    (void)tn;
}

int decode_hpa(struct mctx *c, const struct cfg_node *spec, struct model_hpa *h)
{
    h->min_replicas = 1;
    h->scale_down_stabilization_s = 300;
    const struct cfg_node *ref = dneed(c, spec, "scaleTargetRef");
    if (ref && expect_map(c, ref)) {
        const char *kind = NULL, *api = NULL;
        if (dstr_need(c, ref, "kind", &kind) == 1 && strcmp(kind, "Deployment") != 0)
            model_err(c, cfg_map_get(ref, "kind"), "strata scales Deployments only, got \"%.40s\"", kind);
        if (dstr(c, ref, "apiVersion", &api) == 1 && strcmp(api, "apps/v1") != 0)
            model_err(c, cfg_map_get(ref, "apiVersion"), "expected apps/v1, got \"%.40s\"", api);
        dstr_need(c, ref, "name", &h->target);
    }
    dint(c, spec, "minReplicas", 1, 1000, &h->min_replicas);
    if (dneed(c, spec, "maxReplicas") && dint(c, spec, "maxReplicas", 1, 1000, &h->max_replicas) == 1 &&
        h->max_replicas < h->min_replicas)
        model_err(c, cfg_map_get(spec, "maxReplicas"), "must be at least minReplicas (%d), got %d", h->min_replicas,
                  h->max_replicas);
    const struct cfg_node *ms = dseq(c, spec, "metrics");
    for (size_t i = 0; i < cfg_count(ms); i++) {
        const struct cfg_node *it = cfg_seq_item(ms, i);
        if (expect_map(c, it))
            decode_metric(c, it, h);
    }
    if (!h->cpu_utilization && !h->requests_per_second_milli)
        h->cpu_utilization = 80; /* Kubernetes' default when metrics is empty */
    const struct cfg_node *bh = dmap(c, spec, "behavior");
    dint(c, dmap(c, bh, "scaleDown"), "stabilizationWindowSeconds", 0, 3600, &h->scale_down_stabilization_s);
    dint(c, dmap(c, bh, "scaleUp"), "stabilizationWindowSeconds", 0, 3600, &h->scale_up_stabilization_s);
    return 0;
}

/* ---- strata.dev/v1alpha1 -------------------------------------------------- */

int decode_database(struct mctx *c, const struct cfg_node *spec, struct model_database *db)
{
    static const char *const engines[] = { "postgresql", "redis", "nats", NULL };
    int e = one_of(c, spec, "engine", engines, -2);
    if (e == -2)
        model_err_sub(c, spec, "engine", "required field is missing (postgresql, redis or nats)");
    db->engine = e == 1 ? MODEL_DB_REDIS : e == 2 ? MODEL_DB_NATS : MODEL_DB_POSTGRESQL;
    if (dstr_need(c, spec, "secretName", &db->secret_name) == 1 && !is_dns_label(db->secret_name))
        model_err(c, cfg_map_get(spec, "secretName"), "invalid Secret name \"%.60s\"", db->secret_name);
    return 0;
}

int decode_generated_secret(struct mctx *c, const struct cfg_node *spec, struct model_generated_secret *g)
{
    static const char *const gens[] = { "ec-p256-private-key", "random-32", NULL };
    const struct cfg_node *keys = dneed(c, spec, "keys");
    if (!keys)
        return -1;
    if (cfg_kind(keys) != CFG_SEQ || cfg_count(keys) == 0) {
        model_err(c, keys, "expected a non-empty sequence of keys");
        return -1;
    }
    g->keys = model_alloc(c, cfg_count(keys) * sizeof *g->keys);
    for (size_t i = 0; g->keys && i < cfg_count(keys); i++) {
        const struct cfg_node *it = cfg_seq_item(keys, i);
        struct model_kv *kv = &g->keys[g->nkeys];
        if (!expect_map(c, it) || dstr_need(c, it, "name", &kv->key) != 1)
            continue;
        int gen = one_of(c, it, "generator", gens, -2);
        if (gen == -2)
            model_err_sub(c, it, "generator", "required field is missing (ec-p256-private-key or random-32)");
        if (gen < 0)
            continue;
        kv->value = gens[gen];
        for (size_t k = 0; k < g->nkeys; k++)
            if (strcmp(g->keys[k].key, kv->key) == 0)
                model_err(c, cfg_map_get(it, "name"), "duplicate key \"%.60s\"", kv->key);
        g->nkeys++;
    }
    return 0;
}

static void decode_rl_rule(struct mctx *c, const struct cfg_node *it, struct model_ratelimit_rule *r)
{
    static const char *const keys[] = { "clientIP", "jwtSubject", "header", NULL };
    static const char *const scopes[] = { "local", "global", NULL };
    if (dstr_need(c, it, "pathPrefix", &r->path_prefix) == 1 && r->path_prefix[0] != '/')
        model_err(c, cfg_map_get(it, "pathPrefix"), "must start with '/'");
    dstrs(c, it, "methods", &r->methods, &r->nmethods);
    int k = one_of(c, it, "key", keys, 0);
    r->key = k == 1 ? MODEL_RL_JWT_SUB : k == 2 ? MODEL_RL_HEADER : MODEL_RL_CLIENT_IP;
    int hh = dstr(c, it, "header", &r->header);
    if (k == 2 && hh == 0)
        model_err_sub(c, it, "header", "required field is missing (key: header names a request header)");
    if (dneed(c, it, "requests"))
        dint(c, it, "requests", 1, 1000000000, &r->requests);
    int period_ms = 0;
    if (dneed(c, it, "period") && ddur_ms(c, it, "period", 1000, 86400000, &period_ms) == 1) {
        if (period_ms % 1000)
            model_err(c, cfg_map_get(it, "period"), "must be whole seconds");
        r->period_s = period_ms / 1000;
    }
    r->burst = r->requests;
    dint(c, it, "burst", 1, 1000000000, &r->burst);
    r->global = one_of(c, it, "scope", scopes, 0) == 1;
}

int decode_ratelimit(struct mctx *c, const struct cfg_node *spec, struct model_ratelimit *rl)
{
    const struct cfg_node *rules = dneed(c, spec, "rules");
    if (!rules)
        return -1;
    if (cfg_kind(rules) != CFG_SEQ || cfg_count(rules) == 0) {
        model_err(c, rules, "expected a non-empty sequence of rules");
        return -1;
    }
    rl->rules = model_alloc(c, cfg_count(rules) * sizeof *rl->rules);
    for (size_t i = 0; rl->rules && i < cfg_count(rules); i++) {
        const struct cfg_node *it = cfg_seq_item(rules, i);
        if (expect_map(c, it))
            decode_rl_rule(c, it, &rl->rules[rl->nrules++]);
    }
    return 0;
}

int decode_waf(struct mctx *c, const struct cfg_node *spec, struct model_waf *w)
{
    static const char *const modes[] = { "block", "detect", NULL };
    static const char *const all[] = { "/" };
    w->paranoia = 1;
    w->anomaly_threshold = 5;
    if (dstrs(c, spec, "pathPrefixes", &w->path_prefixes, &w->npath_prefixes) == 0 || !w->npath_prefixes) {
        w->path_prefixes = (const char **)all;
        w->npath_prefixes = 1;
    }
    for (size_t i = 0; i < w->npath_prefixes; i++)
        if (w->path_prefixes[i][0] != '/')
            model_err(c, cfg_seq_item(cfg_map_get(spec, "pathPrefixes"), i), "must start with '/'");
    w->detect_only = one_of(c, spec, "mode", modes, 0) == 1;
    dint(c, spec, "paranoiaLevel", 1, 4, &w->paranoia);
    dint(c, spec, "anomalyThreshold", 1, 1000, &w->anomaly_threshold);
    return 0;
}
