/* compile_policy.c — PeerAuthentication → the inbound listener's mTLS mode,
 * AuthorizationPolicy → the sidecar's authorization[] (docs/mesh.md). */
#include <stdio.h>
#include <string.h>

#include "control/compile_internal.h"

/* Istio's precedence: a policy whose workload selector matches the pod wins
 * over the namespace-wide one (empty selector); none at all: STRICT. Among
 * several of one kind, the first in model order. */
bool cc_mtls_permissive(const struct cc *c)
{
    const struct model_peerauth *ns_wide = NULL;
    for (size_t i = 0; i < c->m->npeerauths; i++) {
        const struct model_peerauth *pa = &c->m->peerauths[i];
        if (!cc_ns_eq(pa->namespace, c->ns))
            continue;
        if (pa->selector.n == 0) {
            if (!ns_wide)
                ns_wide = pa;
        } else if (cc_labels_match(&pa->selector, &c->p->deployment->pod_labels)) {
            return pa->permissive;
        }
    }
    return ns_wide ? ns_wide->permissive : false;
}

static void put_list(struct cc *c, json_t *o, const char *key, const char *const *v, size_t n, size_t max,
                     const char *policy)
{
    if (n > max) {
        cc_fail(c, "AuthorizationPolicy %s: %s: more than the proxy's %zu entries", policy, key, max);
        return;
    }
    if (n)
        cc_put(c, o, key, cc_strings(c, v, n));
}

/* A source as the sidecar can check it. The sidecar verifies no JWT, so a
 * request never has a request principal there: a source that requires one
 * (requestPrincipals) never matches — *skip is set and the source is left
 * out — and notRequestPrincipals always holds, so it is dropped. */
static json_t *source(struct cc *c, const struct model_authz_source *s, const char *policy, bool *skip)
{
    *skip = s->nrequest_principals > 0;
    if (*skip)
        return NULL;
    json_t *o = json_object();
    put_list(c, o, "principals", s->principals, s->nprincipals, 256, policy);
    put_list(c, o, "not_principals", s->not_principals, s->nnot_principals, 256, policy);
    put_list(c, o, "namespaces", s->namespaces, s->nnamespaces, 256, policy);
    put_list(c, o, "not_namespaces", s->not_namespaces, s->nnot_namespaces, 256, policy);
    return o;
}

static json_t *operation(struct cc *c, const struct model_authz_op *op, const char *policy)
{
    json_t *o = json_object();
    put_list(c, o, "methods", op->methods, op->nmethods, 32, policy);
    put_list(c, o, "not_methods", op->not_methods, op->nnot_methods, 32, policy);
    put_list(c, o, "paths", op->paths, op->npaths, 256, policy);
    put_list(c, o, "not_paths", op->not_paths, op->nnot_paths, 256, policy);
    return o;
}

/* NULL when the rule can never match at a sidecar (every source skipped). */
static json_t *rule(struct cc *c, const struct model_authz_rule *r, const char *policy)
{
    if (r->nfrom > 32 || r->nto > 32) {
        cc_fail(c, "AuthorizationPolicy %s: more than the proxy's 32 sources or operations in a rule", policy);
        return NULL;
    }
    json_t *o = json_object();
    if (r->nfrom) {
        json_t *from = json_array();
        for (size_t i = 0; i < r->nfrom; i++) {
            bool skip;
            json_t *s = source(c, &r->from[i], policy, &skip);
            if (!skip)
                cc_push(c, from, s);
        }
        if (json_array_size(from) == 0) {
            json_decref(from);
            json_decref(o);
            return NULL;
        }
        cc_put(c, o, "from", from);
    }
    if (r->nto) {
        json_t *to = json_array();
        for (size_t i = 0; i < r->nto; i++)
            cc_push(c, to, operation(c, &r->to[i], policy));
        cc_put(c, o, "to", to);
    }
    if (!o)
        cc_fail(c, NULL);
    return o;
}

void cc_authorization(struct cc *c, json_t *doc)
{
    json_t *arr = json_array();
    for (size_t i = 0; i < c->m->nauthzpolicies && !c->failed; i++) {
        const struct model_authzpolicy *ap = &c->m->authzpolicies[i];
        if (!cc_selects(c, ap->namespace, &ap->selector))
            continue;
        if (json_array_size(arr) == 256 || ap->nrules > 64) {
            cc_fail(c, "AuthorizationPolicy %s: past the proxy's 256 policies or 64 rules", ap->name);
            break;
        }
        json_t *o = json_object();
        cc_put_str(c, o, "name", ap->name);
        cc_put_str(c, o, "action", ap->deny ? "DENY" : "ALLOW");
        /* Rules that can never match here are left out; a policy left with
         * none allows nothing (ALLOW) or denies nothing (DENY), as in Istio. */
        json_t *rules = json_array();
        for (size_t j = 0; j < ap->nrules; j++) {
            json_t *r = rule(c, &ap->rules[j], ap->name);
            if (r)
                cc_push(c, rules, r);
        }
        if (json_array_size(rules))
            cc_put(c, o, "rules", rules);
        else
            json_decref(rules);
        cc_push(c, arr, o);
    }
    if (json_array_size(arr))
        cc_put(c, doc, "authorization", arr);
    else
        json_decref(arr);
    if (!arr)
        cc_fail(c, NULL);
}
