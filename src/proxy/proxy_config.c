#include "proxy/proxy_config.h"

#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/http1_parse.h"
#include "core/json.h"
#include "proxy/resilience.h"

struct ctx {
    const char *file;
    char *err;
    size_t errsz;
};

static int fail(struct ctx *x, const char *path, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(struct ctx *x, const char *path, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(x->err, x->errsz, "%s: %s: %s", x->file, path, msg);
    return -EINVAL;
}

static int only_keys(struct ctx *x, const char *path, json_t *obj, const char *const *allowed)
{
    const char *key;
    json_t *v;
    if (!json_is_object(obj))
        return fail(x, path, "expected an object");
    json_object_foreach(obj, key, v) {
        bool ok = false;
        for (const char *const *a = allowed; *a; a++)
            ok |= !strcmp(*a, key);
        if (!ok)
            return fail(x, path, "unknown field \"%s\"", key);
    }
    return 0;
}

static int get_str(struct ctx *x, const char *path, json_t *obj, const char *key, bool required, char **out)
{
    json_t *v = json_object_get(obj, key);
    char p[160];
    snprintf(p, sizeof p, "%s.%s", path, key);
    if (!v) {
        if (required)
            return fail(x, p, "required");
        *out = NULL;
        return 0;
    }
    if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) > 1024)
        return fail(x, p, "expected a non-empty string");
    *out = strdup(json_string_value(v));
    return *out ? 0 : -ENOMEM;
}

/* An integer field in lo..hi, or def when absent. */
static int get_uint(struct ctx *x, const char *path, json_t *obj, const char *key, uint64_t lo, uint64_t hi,
                    uint64_t def, uint64_t *out)
{
    json_t *v = json_object_get(obj, key);
    if (!v) {
        *out = def;
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) < 0 || (uint64_t)json_integer_value(v) < lo ||
        (uint64_t)json_integer_value(v) > hi)
        return fail(x, path, "%s: expected an integer in %llu..%llu", key, (unsigned long long)lo,
                    (unsigned long long)hi);
    *out = (uint64_t)json_integer_value(v);
    return 0;
}

static int get_u32(struct ctx *x, const char *path, json_t *obj, const char *key, uint32_t lo, uint32_t hi,
                   uint32_t def, uint32_t *out)
{
    uint64_t v;
    int rc = get_uint(x, path, obj, key, lo, hi, def, &v);
    *out = (uint32_t)v;
    return rc;
}

static int get_bool(struct ctx *x, const char *path, json_t *obj, const char *key, bool def, bool *out)
{
    json_t *v = json_object_get(obj, key);
    if (!v) {
        *out = def;
        return 0;
    }
    if (!json_is_boolean(v))
        return fail(x, path, "%s: expected true or false", key);
    *out = json_is_true(v);
    return 0;
}

/* A string field that must be one of choices; *out is its index, def when absent. */
static int get_enum(struct ctx *x, const char *path, json_t *obj, const char *key, const char *const *choices,
                    int def, int *out)
{
    json_t *v = json_object_get(obj, key);
    if (!v) {
        *out = def;
        return 0;
    }
    for (int i = 0; json_is_string(v) && choices[i]; i++)
        if (!strcmp(choices[i], json_string_value(v))) {
            *out = i;
            return 0;
        }
    char list[160] = "";
    for (int i = 0; choices[i]; i++)
        snprintf(list + strlen(list), sizeof list - strlen(list), "%s\"%s\"", i ? ", " : "", choices[i]);
    return fail(x, path, "%s: expected one of %s", key, list);
}

static int load_strings(struct ctx *x, const char *path, json_t *o, const char *key, size_t max, char ***out,
                        size_t *n);
static void free_authz_policy(struct proxy_authz_policy *pol);

/* Header names: RFC 9110 tokens; values: no CR, LF or NUL. */
static bool is_token(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (!strchr("!#$%&'*+-.^_`|~", *s) && !((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'z') ||
                                                 (*s >= 'A' && *s <= 'Z')))
            return false;
    return true;
}
static bool is_field_value(const char *s)
{
    return !strpbrk(s, "\r\n");
}

static int compile_regex(struct ctx *x, const char *path, const char *src, regex_t **out)
{
    /* Anchored: the whole path (or value) must match, as Istio's regex does. */
    size_t n = strlen(src) + 8;
    char *anch = malloc(n);
    regex_t *re = malloc(sizeof *re);
    if (!anch || !re) {
        free(anch);
        free(re);
        return -ENOMEM;
    }
    snprintf(anch, n, "^(%s)$", src);
    int rc = regcomp(re, anch, REG_EXTENDED | REG_NOSUB);
    free(anch);
    if (rc) {
        char msg[128];
        regerror(rc, re, msg, sizeof msg);
        free(re);
        return fail(x, path, "regex: %s", msg);
    }
    *out = re;
    return 0;
}

static void free_regex(regex_t *re)
{
    if (re) {
        regfree(re);
        free(re);
    }
}

static struct proxy_cluster *find_cluster(struct proxy_config *c, const char *name)
{
    for (size_t i = 0; i < c->nclusters; i++)
        if (!strcmp(c->clusters[i].name, name))
            return &c->clusters[i];
    return NULL;
}

static int load_health(struct ctx *x, const char *path, struct proxy_cluster *k, json_t *h)
{
    static const char *const keys[] = { "path", "interval_ms", "timeout_ms", "healthy_threshold",
                                        "unhealthy_threshold", NULL };
    char p[128];
    snprintf(p, sizeof p, "%s.health_check", path);
    struct proxy_health_check *hc = &k->health;
    int rc = only_keys(x, p, h, keys);
    if (rc == 0)
        rc = get_str(x, p, h, "path", true, &hc->path);
    if (rc == 0 && hc->path[0] != '/')
        rc = fail(x, p, "path: must start with '/'");
    if (rc == 0)
        rc = get_u32(x, p, h, "interval_ms", 100, 3600000, 2000, &hc->interval_ms);
    if (rc == 0)
        rc = get_u32(x, p, h, "timeout_ms", 10, 60000, 1000, &hc->timeout_ms);
    if (rc == 0)
        rc = get_u32(x, p, h, "healthy_threshold", 1, 100, 1, &hc->healthy_threshold);
    if (rc == 0)
        rc = get_u32(x, p, h, "unhealthy_threshold", 1, 100, 2, &hc->unhealthy_threshold);
    return rc;
}

/* {"key": "value", ...} → labels (values must be strings). */
static int load_labels(struct ctx *x, const char *path, json_t *o, struct proxy_label **out, size_t *n)
{
    if (!json_is_object(o) || json_object_size(o) > 32)
        return fail(x, path, "labels: expected an object of at most 32 string values");
    *out = calloc(json_object_size(o) + 1, sizeof **out);
    if (!*out)
        return -ENOMEM;
    const char *k;
    json_t *v;
    json_object_foreach(o, k, v) {
        if (!json_is_string(v))
            return fail(x, path, "labels.%s: expected a string", k);
        (*out)[*n].key = strdup(k);
        (*out)[*n].value = strdup(json_string_value(v));
        if (!(*out)[(*n)++].key || !(*out)[*n - 1].value)
            return -ENOMEM;
    }
    return 0;
}

static const char *label_value(const struct proxy_label *ls, size_t n, const char *key)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(ls[i].key, key))
            return ls[i].value;
    return NULL;
}

static void free_labels(struct proxy_label *ls, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(ls[i].key);
        free(ls[i].value);
    }
    free(ls);
}

static int load_endpoint(struct ctx *x, const char *p, size_t j, json_t *ep, struct proxy_endpoint *e)
{
    static const char *const keys[] = { "address", "labels", NULL };
    char ep_path[96];
    snprintf(ep_path, sizeof ep_path, "%s.endpoints[%zu]", p, j);
    const char *addr = json_is_string(ep) ? json_string_value(ep) : NULL;
    if (json_is_object(ep)) {
        int rc = only_keys(x, ep_path, ep, keys);
        if (rc < 0)
            return rc;
        json_t *a = json_object_get(ep, "address"), *l = json_object_get(ep, "labels");
        addr = json_is_string(a) ? json_string_value(a) : NULL;
        if (l && (rc = load_labels(x, ep_path, l, &e->labels, &e->nlabels)) < 0)
            return rc;
    }
    if (!addr || net_addr_parse(str_from_cstr(addr), false, &e->addr) < 0)
        return fail(x, ep_path, "expected \"HOST:PORT\" (numeric host) or {address, labels}");
    net_addr_format(&e->addr, e->name, sizeof e->name);
    e->region = label_value(e->labels, e->nlabels, "topology.kubernetes.io/region");
    if (!e->region)
        e->region = label_value(e->labels, e->nlabels, "region");
    e->zone = label_value(e->labels, e->nlabels, "topology.kubernetes.io/zone");
    if (!e->zone)
        e->zone = label_value(e->labels, e->nlabels, "zone");
    atomic_init(&e->healthy, 1);
    atomic_init(&e->active, 0);
    return 0;
}

static int load_subsets(struct ctx *x, const char *p, struct proxy_cluster *k, json_t *arr)
{
    static const char *const keys[] = { "name", "labels", NULL };
    if (!json_is_array(arr) || json_array_size(arr) > 64)
        return fail(x, p, "subsets: expected an array of at most 64 {name, labels}");
    k->subsets = calloc(json_array_size(arr) + 1, sizeof *k->subsets);
    if (!k->subsets)
        return -ENOMEM;
    size_t i;
    json_t *o;
    json_array_foreach(arr, i, o) {
        char sp[128];
        snprintf(sp, sizeof sp, "%s.subsets[%zu]", p, i);
        struct proxy_subset *ss = &k->subsets[k->nsubsets++];
        int rc = only_keys(x, sp, o, keys);
        if (rc == 0)
            rc = get_str(x, sp, o, "name", true, &ss->name);
        json_t *l = json_object_get(o, "labels");
        if (rc == 0 && !l)
            rc = fail(x, sp, "labels: required");
        if (rc == 0)
            rc = load_labels(x, sp, l, &ss->labels, &ss->nlabels);
        if (rc < 0)
            return rc;
        for (size_t j = 0; j + 1 < k->nsubsets; j++)
            if (!strcmp(k->subsets[j].name, ss->name))
                return fail(x, sp, "subset \"%s\" is defined twice", ss->name);
        ss->members = calloc(k->nendpoints + 1, sizeof *ss->members);
        if (!ss->members)
            return -ENOMEM;
        for (size_t e = 0; e < k->nendpoints; e++) {
            bool all = true;
            for (size_t m = 0; m < ss->nlabels && all; m++) {
                const char *v = label_value(k->endpoints[e].labels, k->endpoints[e].nlabels, ss->labels[m].key);
                all = v && !strcmp(v, ss->labels[m].value);
            }
            if (all)
                ss->members[ss->nmembers++] = (uint32_t)e;
        }
    }
    return 0;
}

static int load_cluster_policies(struct ctx *x, const char *p, struct proxy_cluster *k, json_t *cl)
{
    int rc = 0;
    json_t *o;
    char q[128];
    if ((o = json_object_get(cl, "circuit_breaker"))) {
        static const char *const keys[] = { "max_connections", "max_pending_requests", "max_requests",
                                            "max_retries", NULL };
        struct proxy_circuit_breaker *b = &k->breaker;
        snprintf(q, sizeof q, "%s.circuit_breaker", p);
        if ((rc = only_keys(x, q, o, keys)) < 0 ||
            (rc = get_u32(x, q, o, "max_connections", 0, 10000000, 0, &b->max_connections)) < 0 ||
            (rc = get_u32(x, q, o, "max_pending_requests", 0, 10000000, 0, &b->max_pending_requests)) < 0 ||
            (rc = get_u32(x, q, o, "max_requests", 0, 10000000, 0, &b->max_requests)) < 0 ||
            (rc = get_u32(x, q, o, "max_retries", 0, 10000000, 0, &b->max_retries)) < 0)
            return rc;
    }
    if ((o = json_object_get(cl, "outlier_detection"))) {
        static const char *const keys[] = { "consecutive_5xx", "consecutive_gateway_errors", "interval_ms",
                                            "base_ejection_ms", "max_ejection_percent", NULL };
        struct proxy_outlier_detection *d = &k->outlier;
        snprintf(q, sizeof q, "%s.outlier_detection", p);
        d->enabled = true;
        if ((rc = only_keys(x, q, o, keys)) < 0 ||
            (rc = get_u32(x, q, o, "consecutive_5xx", 0, 100000, 5, &d->consecutive_5xx)) < 0 ||
            (rc = get_u32(x, q, o, "consecutive_gateway_errors", 0, 100000, 0, &d->consecutive_gateway_errors)) < 0 ||
            (rc = get_u32(x, q, o, "interval_ms", 10, 3600000, 10000, &d->interval_ms)) < 0 ||
            (rc = get_u32(x, q, o, "base_ejection_ms", 1, 86400000, 30000, &d->base_ejection_ms)) < 0 ||
            (rc = get_u32(x, q, o, "max_ejection_percent", 0, 100, 10, &d->max_ejection_percent)) < 0)
            return rc;
    }
    if ((o = json_object_get(cl, "tls"))) {
        static const char *const keys[] = { "cert_file", "key_file", "ca_file", "spiffe_id", "sni", NULL };
        snprintf(q, sizeof q, "%s.tls", p);
        struct proxy_upstream_tls *t = k->tls = calloc(1, sizeof *t);
        if (!t)
            return -ENOMEM;
        if ((rc = only_keys(x, q, o, keys)) < 0 || (rc = get_str(x, q, o, "cert_file", false, &t->cert_file)) < 0 ||
            (rc = get_str(x, q, o, "key_file", false, &t->key_file)) < 0 ||
            (rc = get_str(x, q, o, "ca_file", true, &t->ca_file)) < 0 ||
            (rc = get_str(x, q, o, "spiffe_id", false, &t->spiffe_id)) < 0 ||
            (rc = get_str(x, q, o, "sni", false, &t->sni)) < 0)
            return rc;
        if (!!t->cert_file != !!t->key_file)
            return fail(x, q, "cert_file and key_file go together");
        if (!t->spiffe_id == !t->sni)
            return fail(x, q, "exactly one of \"spiffe_id\" (mesh) and \"sni\" (hostname) is required");
        if (t->spiffe_id && strncmp(t->spiffe_id, "spiffe://", 9))
            return fail(x, q, "spiffe_id: expected spiffe://TRUST-DOMAIN/ns/NS/sa/SA");
        const char *files[] = { t->cert_file, t->key_file, t->ca_file };
        for (size_t f = 0; f < 3; f++)
            if (files[f] && access(files[f], R_OK) < 0)
                return fail(x, q, "%s: cannot read %s: %s", f == 0 ? "cert_file" : f == 1 ? "key_file" : "ca_file",
                            files[f], strerror(errno));
    }
    bool loc = true;
    if ((rc = get_bool(x, p, cl, "locality_aware", true, &loc)) < 0)
        return rc;
    k->locality_aware = loc;
    return 0;
}

static int load_clusters(struct ctx *x, struct proxy_config *c, json_t *arr)
{
    static const char *const keys[] = { "name", "endpoints", "lb", "health_check", "subsets", "circuit_breaker",
                                        "outlier_detection", "tls", "locality_aware", NULL };
    static const char *const lbs[] = { "round_robin", "least_request", NULL };
    if (!arr) /* a gateway of redirects and direct responses needs none */
        return 0;
    if (!json_is_array(arr) || json_array_size(arr) > 4096)
        return fail(x, "$.clusters", "expected an array");
    c->clusters = calloc(json_array_size(arr) + 1, sizeof *c->clusters);
    if (!c->clusters)
        return -ENOMEM;
    size_t i;
    json_t *cl;
    json_array_foreach(arr, i, cl) {
        char p[64];
        snprintf(p, sizeof p, "$.clusters[%zu]", i);
        struct proxy_cluster *k = &c->clusters[c->nclusters++];
        int lb = 0, rc = only_keys(x, p, cl, keys);
        if (rc == 0)
            rc = get_str(x, p, cl, "name", true, &k->name);
        if (rc == 0)
            rc = get_enum(x, p, cl, "lb", lbs, PROXY_LB_ROUND_ROBIN, &lb);
        if (rc < 0)
            return rc;
        k->lb = (enum proxy_lb)lb;
        if (find_cluster(c, k->name) != k)
            return fail(x, p, "cluster \"%s\" is defined twice", k->name);
        json_t *eps = json_object_get(cl, "endpoints");
        /* Empty is valid: a service whose replicas are all unready (→ 503). */
        if (!json_is_array(eps) || json_array_size(eps) > 1024)
            return fail(x, p, "endpoints: expected 0..1024 \"HOST:PORT\" or {address, labels}");
        k->endpoints = calloc(json_array_size(eps) + 1, sizeof *k->endpoints);
        if (!k->endpoints)
            return -ENOMEM;
        size_t j;
        json_t *ep;
        json_array_foreach(eps, j, ep) {
            if ((rc = load_endpoint(x, p, j, ep, &k->endpoints[k->nendpoints])) < 0) {
                k->nendpoints++; /* its labels are freed with the cluster */
                return rc;
            }
            k->nendpoints++;
        }
        json_t *h = json_object_get(cl, "health_check");
        if (h && (rc = load_health(x, p, k, h)) < 0)
            return rc;
        json_t *sub = json_object_get(cl, "subsets");
        if (sub && (rc = load_subsets(x, p, k, sub)) < 0)
            return rc;
        if ((rc = load_cluster_policies(x, p, k, cl)) < 0)
            return rc;
    }
    return 0;
}

static const struct {
    const char *name;
    unsigned bit;
} jwt_algs[] = { { "ES256", 1 }, { "RS256", 2 }, { "EdDSA", 4 } };

static int load_jwt_providers(struct ctx *x, struct proxy_config *c, json_t *arr)
{
    static const char *const keys[] = { "name", "issuer", "audiences", "jwks_uri", "algorithms", "leeway_s",
                                        "jwks_refresh_s", "max_token_bytes", "claims_to_headers", "forward_token", NULL };
    if (!arr)
        return 0;
    if (!json_is_array(arr) || json_array_size(arr) > 64)
        return fail(x, "$.jwt_providers", "expected an array of at most 64 providers");
    c->jwt_providers = calloc(json_array_size(arr) + 1, sizeof *c->jwt_providers);
    if (!c->jwt_providers)
        return -ENOMEM;
    size_t i;
    json_t *o;
    json_array_foreach(arr, i, o) {
        char p[64];
        snprintf(p, sizeof p, "$.jwt_providers[%zu]", i);
        struct proxy_jwt_provider *jp = &c->jwt_providers[c->njwt_providers++];
        int rc = only_keys(x, p, o, keys);
        if (rc == 0)
            rc = get_str(x, p, o, "name", true, &jp->name);
        if (rc == 0)
            rc = get_str(x, p, o, "issuer", true, &jp->issuer);
        if (rc == 0)
            rc = get_str(x, p, o, "jwks_uri", true, &jp->jwks_uri);
        if (rc == 0 && strncmp(jp->jwks_uri, "http://", 7))
            rc = fail(x, p, "jwks_uri: expected http://HOST:PORT/path (numeric host)");
        if (rc == 0)
            rc = get_u32(x, p, o, "leeway_s", 0, 3600, 30, &jp->leeway_s);
        if (rc == 0)
            rc = get_u32(x, p, o, "jwks_refresh_s", 1, 86400, 300, &jp->jwks_refresh_s);
        if (rc == 0)
            rc = get_u32(x, p, o, "max_token_bytes", 64, 65536, 8192, &jp->max_token_bytes);
        if (rc == 0)
            rc = get_bool(x, p, o, "forward_token", true, &jp->forward_token);
        if (rc < 0)
            return rc;
        for (size_t j = 0; j + 1 < c->njwt_providers; j++)
            if (!strcmp(c->jwt_providers[j].name, jp->name))
                return fail(x, p, "provider \"%s\" is defined twice", jp->name);
        json_t *aud = json_object_get(o, "audiences");
        if (aud) {
            if (!json_is_array(aud) || json_array_size(aud) > 32)
                return fail(x, p, "audiences: expected an array of at most 32 strings");
            jp->audiences = calloc(json_array_size(aud) + 1, sizeof *jp->audiences);
            if (!jp->audiences)
                return -ENOMEM;
            size_t j;
            json_t *a;
            json_array_foreach(aud, j, a) {
                if (!json_is_string(a) || !json_string_length(a))
                    return fail(x, p, "audiences[%zu]: expected a non-empty string", j);
                if (!(jp->audiences[jp->naudiences++] = strdup(json_string_value(a))))
                    return -ENOMEM;
            }
        }
        json_t *algs = json_object_get(o, "algorithms");
        jp->algorithms = algs ? 0 : 1 | 2 | 4;
        if (algs) {
            if (!json_is_array(algs) || json_array_size(algs) == 0)
                return fail(x, p, "algorithms: expected a non-empty array of \"ES256\", \"RS256\", \"EdDSA\"");
            size_t j;
            json_t *a;
            json_array_foreach(algs, j, a) {
                unsigned bit = 0;
                for (size_t k = 0; k < sizeof jwt_algs / sizeof *jwt_algs; k++)
                    if (json_is_string(a) && !strcmp(json_string_value(a), jwt_algs[k].name))
                        bit = jwt_algs[k].bit;
                if (!bit)
                    return fail(x, p, "algorithms[%zu]: expected \"ES256\", \"RS256\" or \"EdDSA\" "
                                      "(HMAC and none are never accepted)", j);
                jp->algorithms |= bit;
            }
        }
        json_t *ch = json_object_get(o, "claims_to_headers");
        if (ch) {
            static const char *const ckeys[] = { "claim", "header", NULL };
            if (!json_is_array(ch) || json_array_size(ch) > 32)
                return fail(x, p, "claims_to_headers: expected an array of at most 32 {claim, header}");
            jp->claims_to_headers = calloc(json_array_size(ch) + 1, sizeof *jp->claims_to_headers);
            if (!jp->claims_to_headers)
                return -ENOMEM;
            size_t j;
            json_t *e;
            json_array_foreach(ch, j, e) {
                char cp[128];
                snprintf(cp, sizeof cp, "%s.claims_to_headers[%zu]", p, j);
                struct proxy_claim_header *h = &jp->claims_to_headers[jp->nclaims++];
                rc = only_keys(x, cp, e, ckeys);
                if (rc == 0)
                    rc = get_str(x, cp, e, "claim", true, &h->claim);
                if (rc == 0)
                    rc = get_str(x, cp, e, "header", true, &h->header);
                if (rc == 0 && !is_token(h->header))
                    rc = fail(x, cp, "header: \"%s\" is not a valid header name", h->header);
                if (rc < 0)
                    return rc;
            }
        }
    }
    return 0;
}

static int load_rate_limits(struct ctx *x, struct proxy_config *c, json_t *arr)
{
    static const char *const keys[] = { "name", "key", "requests", "period_ms", "burst", "scope", NULL };
    static const char *const scopes[] = { "local", "global", NULL };
    if (!arr)
        return 0;
    if (!json_is_array(arr) || json_array_size(arr) > 256)
        return fail(x, "$.rate_limits", "expected an array of at most 256 limits");
    c->rate_limits = calloc(json_array_size(arr) + 1, sizeof *c->rate_limits);
    if (!c->rate_limits)
        return -ENOMEM;
    size_t i;
    json_t *o;
    json_array_foreach(arr, i, o) {
        char p[64], *key = NULL;
        snprintf(p, sizeof p, "$.rate_limits[%zu]", i);
        struct proxy_rate_limit *rl = &c->rate_limits[c->nrate_limits++];
        int scope = 0, rc = only_keys(x, p, o, keys);
        if (rc == 0)
            rc = get_str(x, p, o, "name", true, &rl->name);
        if (rc == 0)
            rc = get_u32(x, p, o, "requests", 1, 100000000, 0, &rl->requests);
        if (rc == 0 && !json_object_get(o, "requests"))
            rc = fail(x, p, "requests: required");
        if (rc == 0)
            rc = get_u32(x, p, o, "period_ms", 1, 86400000, 1000, &rl->period_ms);
        if (rc == 0)
            rc = get_u32(x, p, o, "burst", 1, 100000000, rl->requests, &rl->burst);
        if (rc == 0)
            rc = get_enum(x, p, o, "scope", scopes, 0, &scope);
        if (rc == 0)
            rc = get_str(x, p, o, "key", false, &key);
        if (rc < 0) {
            free(key);
            return rc;
        }
        if (strchr(rl->name, ':')) /* Redis keys are strata:rl:NAME:KEY */
            rc = fail(x, p, "name: must not contain ':'");
        rl->global = scope == 1;
        if (!key || !strcmp(key, "client_ip")) {
            rl->key = PROXY_RL_CLIENT_IP;
        } else if (!strcmp(key, "jwt_sub")) {
            rl->key = PROXY_RL_JWT_SUB;
        } else if (!strncmp(key, "header:", 7) && is_token(key + 7)) {
            rl->key = PROXY_RL_HEADER;
            rl->header = strdup(key + 7);
        } else {
            rc = fail(x, p, "key: expected \"client_ip\", \"jwt_sub\" or \"header:NAME\", got \"%s\"", key);
        }
        free(key);
        if (rc < 0)
            return rc;
        if (rl->key == PROXY_RL_HEADER && !rl->header)
            return -ENOMEM;
        for (size_t j = 0; j + 1 < c->nrate_limits; j++)
            if (!strcmp(c->rate_limits[j].name, rl->name))
                return fail(x, p, "rate limit \"%s\" is defined twice", rl->name);
    }
    return 0;
}

static int load_header_rules(struct ctx *x, const char *path, json_t *o, struct proxy_header_rules *hr)
{
    static const char *const keys[] = { "set", "add", "remove", NULL };
    int rc = only_keys(x, path, o, keys);
    if (rc < 0)
        return rc;
    for (int pass = 0; pass < 2; pass++) {
        const char *field = pass ? "add" : "set";
        json_t *m = json_object_get(o, field);
        if (!m)
            continue;
        if (!json_is_object(m) || json_object_size(m) > 64)
            return fail(x, path, "%s: expected an object of at most 64 \"Header\": \"value\"", field);
        struct proxy_header_op *ops = calloc(json_object_size(m) + 1, sizeof *ops);
        if (!ops)
            return -ENOMEM;
        size_t *n = pass ? &hr->nadd : &hr->nset;
        if (pass)
            hr->add = ops;
        else
            hr->set = ops;
        const char *k;
        json_t *v;
        json_object_foreach(m, k, v) {
            if (!is_token(k))
                return fail(x, path, "%s: \"%s\" is not a valid header name", field, k);
            if (!json_is_string(v) || !is_field_value(json_string_value(v)) || json_string_length(v) > 4096)
                return fail(x, path, "%s.%s: expected a string without CR or LF", field, k);
            ops[*n].name = strdup(k);
            ops[*n].value = strdup(json_string_value(v));
            if (!ops[(*n)++].value || !ops[*n - 1].name)
                return -ENOMEM;
        }
    }
    json_t *rm = json_object_get(o, "remove");
    if (rm) {
        if (!json_is_array(rm) || json_array_size(rm) > 64)
            return fail(x, path, "remove: expected an array of at most 64 header names");
        hr->remove = calloc(json_array_size(rm) + 1, sizeof *hr->remove);
        if (!hr->remove)
            return -ENOMEM;
        size_t j;
        json_t *v;
        json_array_foreach(rm, j, v) {
            if (!json_is_string(v) || !is_token(json_string_value(v)))
                return fail(x, path, "remove[%zu]: expected a header name", j);
            if (!(hr->remove[hr->nremove++] = strdup(json_string_value(v))))
                return -ENOMEM;
        }
    }
    return 0;
}

static int load_header_matches(struct ctx *x, const char *path, struct proxy_route *rt, json_t *arr)
{
    static const char *const keys[] = { "name", "exact", "prefix", "regex", "present", "invert", NULL };
    if (!json_is_array(arr) || json_array_size(arr) > 16)
        return fail(x, path, "headers: expected an array of at most 16 matches");
    rt->headers = calloc(json_array_size(arr) + 1, sizeof *rt->headers);
    if (!rt->headers)
        return -ENOMEM;
    size_t i;
    json_t *o;
    json_array_foreach(arr, i, o) {
        char p[128], *re = NULL;
        snprintf(p, sizeof p, "%s.headers[%zu]", path, i);
        struct proxy_header_match *m = &rt->headers[rt->nheaders++];
        bool present = true;
        int rc = only_keys(x, p, o, keys);
        if (rc == 0)
            rc = get_str(x, p, o, "name", true, &m->name);
        if (rc == 0)
            rc = get_str(x, p, o, "exact", false, &m->exact);
        if (rc == 0)
            rc = get_str(x, p, o, "prefix", false, &m->prefix);
        if (rc == 0)
            rc = get_str(x, p, o, "regex", false, &re);
        if (rc == 0)
            rc = get_bool(x, p, o, "present", true, &present);
        if (rc == 0)
            rc = get_bool(x, p, o, "invert", false, &m->invert);
        if (rc == 0 && (!!m->exact + !!m->prefix + !!re) > 1)
            rc = fail(x, p, "at most one of \"exact\", \"prefix\" and \"regex\"");
        if (rc == 0 && !present && (m->exact || m->prefix || re))
            rc = fail(x, p, "present: false cannot be combined with a value match");
        if (rc == 0 && re)
            rc = compile_regex(x, p, re, &m->regex);
        free(re);
        if (rc < 0)
            return rc;
        if (!present)
            m->invert = !m->invert; /* "absent" is "present", inverted */
    }
    return 0;
}

static int load_redirect(struct ctx *x, const char *path, struct proxy_route *rt, json_t *o)
{
    static const char *const keys[] = { "scheme", "host", "port", "path", "prefix", "code", NULL };
    char p[128];
    snprintf(p, sizeof p, "%s.redirect", path);
    struct proxy_redirect *r = rt->redirect = calloc(1, sizeof *r);
    if (!r)
        return -ENOMEM;
    uint32_t port = 0, code = 301;
    int rc = only_keys(x, p, o, keys);
    if (rc == 0)
        rc = get_str(x, p, o, "scheme", false, &r->scheme);
    if (rc == 0 && r->scheme && strcmp(r->scheme, "http") && strcmp(r->scheme, "https"))
        rc = fail(x, p, "scheme: expected \"http\" or \"https\"");
    if (rc == 0)
        rc = get_str(x, p, o, "host", false, &r->host);
    if (rc == 0 && r->host && strpbrk(r->host, "/?#@ \r\n"))
        rc = fail(x, p, "host: expected a host name");
    if (rc == 0)
        rc = get_u32(x, p, o, "port", 1, 65535, 0, &port);
    if (rc == 0)
        rc = get_str(x, p, o, "path", false, &r->path);
    if (rc == 0)
        rc = get_str(x, p, o, "prefix", false, &r->prefix);
    if (rc == 0 && ((r->path && (r->path[0] != '/' || !is_field_value(r->path))) ||
                    (r->prefix && (r->prefix[0] != '/' || !is_field_value(r->prefix)))))
        rc = fail(x, p, "path and prefix must start with '/'");
    if (rc == 0 && r->path && r->prefix)
        rc = fail(x, p, "at most one of \"path\" and \"prefix\"");
    if (rc == 0 && r->prefix && !rt->prefix)
        rc = fail(x, p, "prefix: the route must match by \"prefix\"");
    if (rc == 0)
        rc = get_u32(x, p, o, "code", 301, 308, 301, &code);
    if (rc == 0 && (code == 304 || code == 305 || code == 306))
        rc = fail(x, p, "code: expected 301, 302, 303, 307 or 308");
    r->port = (uint16_t)port;
    r->code = (int)code;
    return rc;
}

static int load_direct(struct ctx *x, const char *path, struct proxy_route *rt, json_t *o)
{
    static const char *const keys[] = { "status", "body", "content_type", NULL };
    char p[128];
    snprintf(p, sizeof p, "%s.direct_response", path);
    struct proxy_direct_response *d = rt->direct = calloc(1, sizeof *d);
    if (!d)
        return -ENOMEM;
    uint32_t status = 200;
    int rc = only_keys(x, p, o, keys);
    if (rc == 0)
        rc = get_u32(x, p, o, "status", 200, 599, 200, &status);
    d->status = (int)status;
    json_t *b = json_object_get(o, "body");
    if (rc == 0 && b) {
        if (!json_is_string(b) || json_string_length(b) > 65536)
            return fail(x, p, "body: expected a string of at most 64 KiB");
        if (!(d->body = strdup(json_string_value(b))))
            return -ENOMEM;
    }
    if (rc == 0)
        rc = get_str(x, p, o, "content_type", false, &d->content_type);
    if (rc == 0 && d->content_type && !is_field_value(d->content_type))
        rc = fail(x, p, "content_type: must not contain CR or LF");
    return rc;
}

static int load_waf_route(struct ctx *x, const char *path, struct proxy_route *rt, json_t *o)
{
    static const char *const keys[] = { "mode", "paranoia", "anomaly_threshold", NULL };
    static const char *const modes[] = { "off", "detect", "block", NULL };
    char p[128];
    snprintf(p, sizeof p, "%s.waf", path);
    int mode = PROXY_WAF_BLOCK;
    uint32_t pl = 1, th = 5;
    int rc = only_keys(x, p, o, keys);
    if (rc == 0)
        rc = get_enum(x, p, o, "mode", modes, PROXY_WAF_BLOCK, &mode);
    if (rc == 0)
        rc = get_u32(x, p, o, "paranoia", 1, 4, 1, &pl);
    if (rc == 0)
        rc = get_u32(x, p, o, "anomaly_threshold", 1, 1000, 5, &th);
    rt->waf = (struct proxy_waf){ .mode = (enum proxy_waf_mode)mode, .paranoia = (int)pl,
                                  .anomaly_threshold = (int)th };
    return rc;
}

static int load_jwt_route(struct ctx *x, const char *path, struct proxy_config *c, struct proxy_route *rt, json_t *o)
{
    static const char *const keys[] = { "provider", "mode", NULL };
    static const char *const modes[] = { "off", "optional", "required", NULL };
    char p[128], *prov = NULL;
    snprintf(p, sizeof p, "%s.jwt", path);
    int mode = PROXY_JWT_REQUIRED, rc = only_keys(x, p, o, keys);
    if (rc == 0)
        rc = get_enum(x, p, o, "mode", modes, PROXY_JWT_REQUIRED, &mode);
    if (rc == 0)
        rc = get_str(x, p, o, "provider", mode != PROXY_JWT_OFF, &prov);
    if (rc < 0) {
        free(prov);
        return rc;
    }
    rt->jwt_mode = (enum proxy_jwt_mode)mode;
    for (size_t i = 0; prov && i < c->njwt_providers; i++)
        if (!strcmp(c->jwt_providers[i].name, prov))
            rt->jwt = &c->jwt_providers[i];
    if (prov && !rt->jwt)
        rc = fail(x, p, "provider: no jwt_providers entry named \"%s\"", prov);
    free(prov);
    return rc;
}

static int find_subset(struct ctx *x, const char *path, struct proxy_cluster *k, json_t *o,
                       const struct proxy_subset **out)
{
    json_t *v = json_object_get(o, "subset");
    *out = NULL;
    if (!v)
        return 0;
    for (size_t i = 0; json_is_string(v) && i < k->nsubsets; i++)
        if (!strcmp(k->subsets[i].name, json_string_value(v))) {
            *out = &k->subsets[i];
            return 0;
        }
    return fail(x, path, "subset: cluster \"%s\" has no subset named \"%s\"", k->name,
                json_is_string(v) ? json_string_value(v) : "?");
}

static int load_destinations(struct ctx *x, const char *path, struct proxy_config *c, struct proxy_route *rt,
                             json_t *r)
{
    json_t *one = json_object_get(r, "cluster"), *many = json_object_get(r, "destinations");
    if (one && many)
        return fail(x, path, "at most one of \"cluster\" and \"destinations\"");
    if (!one && !many)
        return 0;
    size_t n = one ? 1 : json_is_array(many) ? json_array_size(many) : 0;
    if (n == 0 || n > 64)
        return fail(x, path, "destinations: expected 1..64 {cluster, weight}");
    rt->destinations = calloc(n, sizeof *rt->destinations);
    if (!rt->destinations)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        static const char *const keys[] = { "cluster", "subset", "weight", NULL };
        char p[128], *name = NULL;
        json_t *o = one ? r : json_array_get(many, i);
        int rc = 0;
        if (one) {
            snprintf(p, sizeof p, "%s", path);
        } else {
            snprintf(p, sizeof p, "%s.destinations[%zu]", path, i);
            rc = only_keys(x, p, o, keys);
        }
        uint32_t w = 1;
        if (rc == 0)
            rc = get_str(x, p, o, "cluster", true, &name);
        if (rc == 0 && !one)
            rc = get_u32(x, p, o, "weight", 0, 1000000, 1, &w);
        if (rc == 0 && !(rt->destinations[i].cluster = find_cluster(c, name)))
            rc = fail(x, p, "cluster: no cluster named \"%s\"", name);
        free(name);
        if (rc == 0)
            rc = find_subset(x, p, rt->destinations[i].cluster, o, &rt->destinations[i].subset);
        if (rc < 0)
            return rc;
        rt->destinations[i].weight = w;
        rt->total_weight += w;
        rt->ndestinations++;
    }
    if (rt->total_weight == 0)
        return fail(x, path, "destinations: the weights add up to 0");
    return 0;
}

/* A percentage with up to two decimals (12.5) → hundredths (1250). */
static int get_percent(struct ctx *x, const char *path, json_t *o, const char *key, uint32_t *out)
{
    json_t *v = json_object_get(o, key);
    *out = 0;
    if (!v)
        return 0;
    double d = json_is_number(v) ? json_number_value(v) : -1;
    if (d < 0 || d > 100)
        return fail(x, path, "%s: expected a percentage 0..100", key);
    *out = (uint32_t)(d * 100 + 0.5);
    return 0;
}

static int load_mirror(struct ctx *x, const char *path, struct proxy_config *c, struct proxy_route *rt, json_t *o)
{
    static const char *const keys[] = { "cluster", "subset", "percent", NULL };
    char p[128], *name = NULL;
    snprintf(p, sizeof p, "%s.mirror", path);
    struct proxy_mirror *m = rt->mirror = calloc(1, sizeof *m);
    if (!m)
        return -ENOMEM;
    int rc = only_keys(x, p, o, keys);
    if (rc == 0)
        rc = get_str(x, p, o, "cluster", true, &name);
    if (rc == 0 && !(m->dest.cluster = find_cluster(c, name)))
        rc = fail(x, p, "cluster: no cluster named \"%s\"", name);
    free(name);
    if (rc == 0)
        rc = find_subset(x, p, m->dest.cluster, o, &m->dest.subset);
    m->percent_x100 = 10000;
    if (rc == 0 && json_object_get(o, "percent"))
        rc = get_percent(x, p, o, "percent", &m->percent_x100);
    return rc;
}

static int load_fault(struct ctx *x, const char *path, struct proxy_route *rt, json_t *o)
{
    static const char *const keys[] = { "delay_ms", "delay_percent", "abort_status", "abort_percent", NULL };
    char p[128];
    snprintf(p, sizeof p, "%s.fault", path);
    struct proxy_fault *f = rt->fault = calloc(1, sizeof *f);
    if (!f)
        return -ENOMEM;
    uint32_t st = 0;
    int rc = only_keys(x, p, o, keys);
    if (rc == 0)
        rc = get_u32(x, p, o, "delay_ms", 0, 3600000, 0, &f->delay_ms);
    if (rc == 0)
        rc = get_percent(x, p, o, "delay_percent", &f->delay_percent_x100);
    if (rc == 0)
        rc = get_u32(x, p, o, "abort_status", 0, 599, 0, &st);
    if (rc == 0)
        rc = get_percent(x, p, o, "abort_percent", &f->abort_percent_x100);
    if (rc == 0 && st && st < 200)
        rc = fail(x, p, "abort_status: expected 200..599");
    f->abort_status = (int)st;
    if (rc == 0 && json_object_get(o, "delay_ms") && !json_object_get(o, "delay_percent"))
        f->delay_percent_x100 = 10000;
    if (rc == 0 && st && !json_object_get(o, "abort_percent"))
        f->abort_percent_x100 = 10000;
    return rc;
}

static int load_retries(struct ctx *x, const char *path, struct proxy_route *rt, json_t *o)
{
    static const char *const keys[] = { "attempts", "per_try_timeout_ms", "retry_on", "retriable_status_codes",
                                        "retry_non_idempotent", "backoff_base_ms", "backoff_max_ms",
                                        "budget_percent", "budget_min_concurrency", NULL };
    static const struct {
        const char *name;
        unsigned bit;
    } kinds[] = { { "5xx", PROXY_RETRY_5XX },
                  { "gateway-error", PROXY_RETRY_GATEWAY_ERROR },
                  { "connect-failure", PROXY_RETRY_CONNECT_FAILURE },
                  { "reset", PROXY_RETRY_RESET },
                  { "retriable-status-codes", PROXY_RETRY_STATUS_CODES } };
    char p[128];
    snprintf(p, sizeof p, "%s.retries", path);
    struct proxy_retry *r = &rt->retry;
    int rc = only_keys(x, p, o, keys);
    if (rc == 0)
        rc = get_u32(x, p, o, "attempts", 0, 10, 2, &r->attempts);
    if (rc == 0)
        rc = get_u32(x, p, o, "per_try_timeout_ms", 0, 3600000, 0, &r->per_try_timeout_ms);
    if (rc == 0)
        rc = get_bool(x, p, o, "retry_non_idempotent", false, &r->non_idempotent);
    if (rc == 0)
        rc = get_u32(x, p, o, "backoff_base_ms", 1, 60000, 25, &r->backoff_base_ms);
    if (rc == 0)
        rc = get_u32(x, p, o, "backoff_max_ms", 1, 600000, 250, &r->backoff_max_ms);
    if (rc == 0)
        rc = get_u32(x, p, o, "budget_percent", 0, 100, 20, &r->budget_percent);
    if (rc == 0)
        rc = get_u32(x, p, o, "budget_min_concurrency", 0, 100000, 3, &r->budget_min_concurrency);
    if (rc < 0)
        return rc;
    json_t *on = json_object_get(o, "retry_on");
    if (!on) {
        r->retry_on = PROXY_RETRY_CONNECT_FAILURE | PROXY_RETRY_RESET | PROXY_RETRY_GATEWAY_ERROR;
    } else {
        if (!json_is_array(on) || json_array_size(on) > 8)
            return fail(x, p, "retry_on: expected an array of \"5xx\", \"gateway-error\", \"connect-failure\", "
                              "\"reset\", \"retriable-status-codes\"");
        size_t i;
        json_t *v;
        json_array_foreach(on, i, v) {
            unsigned bit = 0;
            for (size_t k = 0; k < sizeof kinds / sizeof *kinds; k++)
                if (json_is_string(v) && !strcmp(json_string_value(v), kinds[k].name))
                    bit = kinds[k].bit;
            if (!bit)
                return fail(x, p, "retry_on[%zu]: expected \"5xx\", \"gateway-error\", \"connect-failure\", "
                                  "\"reset\" or \"retriable-status-codes\"", i);
            r->retry_on |= bit;
        }
    }
    json_t *codes = json_object_get(o, "retriable_status_codes");
    if (codes) {
        if (!json_is_array(codes) || json_array_size(codes) > 8)
            return fail(x, p, "retriable_status_codes: expected at most 8 status codes");
        size_t i;
        json_t *v;
        json_array_foreach(codes, i, v) {
            if (!json_is_integer(v) || json_integer_value(v) < 100 || json_integer_value(v) > 599)
                return fail(x, p, "retriable_status_codes[%zu]: expected 100..599", i);
            r->status_codes[r->nstatus_codes++] = (int)json_integer_value(v);
        }
        r->retry_on |= PROXY_RETRY_STATUS_CODES;
    }
    if (r->backoff_max_ms < r->backoff_base_ms)
        return fail(x, p, "backoff_max_ms: must be at least backoff_base_ms");
    return 0;
}

static int load_routes(struct ctx *x, struct proxy_config *c, json_t *arr)
{
    static const char *const keys[] = { "name", "host", "prefix", "exact", "regex", "methods", "headers",
                                        "cluster", "destinations", "redirect", "direct_response", "timeout_ms",
                                        "rewrite_prefix", "rewrite_host", "request_headers", "response_headers",
                                        "jwt", "rate_limit", "waf", "max_body_bytes", "max_header_bytes", "subset",
                                        "mirror", "fault", "retries", "listeners", NULL };
    if (!json_is_array(arr) || json_array_size(arr) > 10000)
        return fail(x, "$.routes", "expected an array");
    c->routes = calloc(json_array_size(arr) + 1, sizeof *c->routes);
    if (!c->routes)
        return -ENOMEM;
    size_t i;
    json_t *r;
    json_array_foreach(arr, i, r) {
        char p[64];
        snprintf(p, sizeof p, "$.routes[%zu]", i);
        struct proxy_route *rt = &c->routes[c->nroutes++];
        int rc = only_keys(x, p, r, keys);
        if (rc == 0)
            rc = get_str(x, p, r, "name", true, &rt->name);
        if (rc == 0)
            rc = get_str(x, p, r, "host", false, &rt->host);
        if (rc == 0)
            rc = get_str(x, p, r, "prefix", false, &rt->prefix);
        if (rc == 0)
            rc = get_str(x, p, r, "exact", false, &rt->exact);
        if (rc == 0)
            rc = get_str(x, p, r, "regex", false, &rt->regex_src);
        if (rc == 0)
            rc = get_str(x, p, r, "rewrite_prefix", false, &rt->rewrite_prefix);
        if (rc == 0)
            rc = get_str(x, p, r, "rewrite_host", false, &rt->rewrite_host);
        if (rc == 0 && rt->rewrite_host && strpbrk(rt->rewrite_host, "/?#@ \r\n"))
            rc = fail(x, p, "rewrite_host: expected a host name");
        if (rc < 0)
            return rc;
        if ((!!rt->prefix + !!rt->exact + !!rt->regex_src) != 1)
            return fail(x, p, "exactly one of \"prefix\", \"exact\" and \"regex\" is required");
        if ((rt->prefix && rt->prefix[0] != '/') || (rt->exact && rt->exact[0] != '/'))
            return fail(x, p, "%s: must start with '/'", rt->prefix ? "prefix" : "exact");
        if (rt->regex_src && (rc = compile_regex(x, p, rt->regex_src, &rt->regex)) < 0)
            return rc;
        if (rt->rewrite_prefix && (!rt->prefix || rt->rewrite_prefix[0] != '/'))
            return fail(x, p, "rewrite_prefix: needs \"prefix\" and must start with '/'");
        if ((rc = load_destinations(x, p, c, rt, r)) < 0)
            return rc;
        json_t *o;
        if ((o = json_object_get(r, "redirect")) && (rc = load_redirect(x, p, rt, o)) < 0)
            return rc;
        if ((o = json_object_get(r, "direct_response")) && (rc = load_direct(x, p, rt, o)) < 0)
            return rc;
        if ((!!rt->ndestinations + !!rt->redirect + !!rt->direct) != 1)
            return fail(x, p, "exactly one of \"cluster\", \"destinations\", \"redirect\" and "
                              "\"direct_response\" is required");
        if ((o = json_object_get(r, "headers")) && (rc = load_header_matches(x, p, rt, o)) < 0)
            return rc;
        char hp[96];
        snprintf(hp, sizeof hp, "%s.request_headers", p);
        if ((o = json_object_get(r, "request_headers")) && (rc = load_header_rules(x, hp, o, &rt->request_headers)) < 0)
            return rc;
        snprintf(hp, sizeof hp, "%s.response_headers", p);
        if ((o = json_object_get(r, "response_headers")) &&
            (rc = load_header_rules(x, hp, o, &rt->response_headers)) < 0)
            return rc;
        if ((o = json_object_get(r, "jwt")) && (rc = load_jwt_route(x, p, c, rt, o)) < 0)
            return rc;
        if ((o = json_object_get(r, "waf")) && (rc = load_waf_route(x, p, rt, o)) < 0)
            return rc;
        if ((o = json_object_get(r, "mirror")) && (rc = load_mirror(x, p, c, rt, o)) < 0)
            return rc;
        if ((o = json_object_get(r, "fault")) && (rc = load_fault(x, p, rt, o)) < 0)
            return rc;
        if ((o = json_object_get(r, "retries")) && (rc = load_retries(x, p, rt, o)) < 0)
            return rc;
        if ((rc = load_strings(x, p, r, "listeners", 16, &rt->listeners, &rt->nlisteners)) < 0)
            return rc;
        for (size_t j = 0; j < rt->nlisteners; j++) {
            bool found = false;
            for (size_t k = 0; k < c->nlisteners && !found; k++)
                found = !strcmp(c->listeners[k].name, rt->listeners[j]);
            if (!found)
                return fail(x, p, "listeners[%zu]: no listener named \"%s\"", j, rt->listeners[j]);
        }
        c->uses_waf |= rt->waf.mode != PROXY_WAF_OFF;
        char *rl = NULL;
        if ((rc = get_str(x, p, r, "rate_limit", false, &rl)) < 0)
            return rc;
        for (size_t j = 0; rl && j < c->nrate_limits; j++)
            if (!strcmp(c->rate_limits[j].name, rl))
                rt->rate_limit = &c->rate_limits[j];
        if (rl && !rt->rate_limit)
            rc = fail(x, p, "rate_limit: no rate_limits entry named \"%s\"", rl);
        free(rl);
        if (rc < 0)
            return rc;
        if (rt->rate_limit && rt->rate_limit->key == PROXY_RL_JWT_SUB && rt->jwt_mode == PROXY_JWT_OFF)
            return fail(x, p, "rate_limit: \"%s\" is keyed by jwt_sub but the route has no jwt", rt->rate_limit->name);
        if (rt->rate_limit && rt->rate_limit->global && !c->redis_url)
            return fail(x, p, "rate_limit: \"%s\" is global but no redis.url is configured", rt->rate_limit->name);
        if ((rc = get_u32(x, p, r, "timeout_ms", 1, 3600000, 0, &rt->timeout_ms)) < 0 ||
            (rc = get_uint(x, p, r, "max_body_bytes", 0, 1ull << 30, 0, &rt->max_body_bytes)) < 0 ||
            (rc = get_u32(x, p, r, "max_header_bytes", 0, 1u << 20, 0, &rt->max_header_bytes)) < 0)
            return rc;
        json_t *m = json_object_get(r, "methods");
        if (m) {
            if (!json_is_array(m) || json_array_size(m) > PROXY_MAX_METHODS)
                return fail(x, p, "methods: expected an array of at most %d methods", PROXY_MAX_METHODS);
            size_t j;
            json_t *mv;
            json_array_foreach(m, j, mv) {
                if (!json_is_string(mv) || json_string_length(mv) == 0 || json_string_length(mv) > 16 ||
                    !is_token(json_string_value(mv)))
                    return fail(x, p, "methods[%zu]: expected a method name", j);
                rt->methods[rt->nmethods] = strdup(json_string_value(mv));
                if (!rt->methods[rt->nmethods++])
                    return -ENOMEM;
            }
        }
    }
    return 0;
}

static int load_tls(struct ctx *x, const char *path, struct proxy_listener *li, json_t *tls)
{
    static const char *const keys[] = { "certificates", "hsts", NULL };
    static const char *const ckeys[] = { "cert_file", "key_file", NULL };
    static const char *const hkeys[] = { "max_age_s", "include_subdomains", NULL };
    char p[96];
    snprintf(p, sizeof p, "%s.tls", path);
    int rc = only_keys(x, p, tls, keys);
    if (rc < 0)
        return rc;
    json_t *hsts = json_object_get(tls, "hsts");
    if (hsts) {
        char hp[128];
        snprintf(hp, sizeof hp, "%s.hsts", p);
        if ((rc = only_keys(x, hp, hsts, hkeys)) < 0 ||
            (rc = get_u32(x, hp, hsts, "max_age_s", 0, 100000000, 31536000, &li->hsts_max_age_s)) < 0 ||
            (rc = get_bool(x, hp, hsts, "include_subdomains", false, &li->hsts_subdomains)) < 0)
            return rc;
    }
    json_t *certs = json_object_get(tls, "certificates");
    if (!json_is_array(certs) || json_array_size(certs) == 0 || json_array_size(certs) > 64)
        return fail(x, p, "certificates: expected 1..64 {cert_file, key_file}");
    li->cert_files = calloc(json_array_size(certs), sizeof *li->cert_files);
    li->key_files = calloc(json_array_size(certs), sizeof *li->key_files);
    if (!li->cert_files || !li->key_files)
        return -ENOMEM;
    size_t i;
    json_t *cert;
    json_array_foreach(certs, i, cert) {
        char cp[160];
        snprintf(cp, sizeof cp, "%.96s.certificates[%zu]", p, i);
        rc = only_keys(x, cp, cert, ckeys);
        if (rc == 0)
            rc = get_str(x, cp, cert, "cert_file", true, &li->cert_files[li->ncerts]);
        if (rc == 0)
            rc = get_str(x, cp, cert, "key_file", true, &li->key_files[li->ncerts]);
        li->ncerts++;
        if (rc < 0)
            return rc;
    }
    return 0;
}

static int load_listener_list(struct ctx *x, struct proxy_config *c, json_t *arr);

static int load_mtls(struct ctx *x, const char *path, struct proxy_listener *li, json_t *o)
{
    static const char *const keys[] = { "mode", "ca_file", NULL };
    static const char *const modes[] = { "STRICT", "PERMISSIVE", NULL };
    char p[96];
    snprintf(p, sizeof p, "%s.mtls", path);
    int mode = 0, rc = only_keys(x, p, o, keys);
    if (rc == 0)
        rc = get_enum(x, p, o, "mode", modes, PROXY_MTLS_STRICT, &mode);
    if (rc == 0)
        rc = get_str(x, p, o, "ca_file", true, &li->client_ca_file);
    li->mtls_mode = (enum proxy_mtls_mode)mode;
    return rc;
}

static int load_listeners(struct ctx *x, struct proxy_config *c, json_t *arr)
{
    json_t *dflt = NULL;
    if (!arr) /* the gateway's default: plain HTTP on 127.0.0.1:8080 */
        arr = dflt = json_pack("[{s:s, s:s}]", "name", "http", "address", "127.0.0.1:8080");
    if (!json_is_array(arr) || json_array_size(arr) == 0 || json_array_size(arr) > 16) {
        json_decref(dflt);
        return arr ? fail(x, "$.listeners", "expected 1..16 listeners") : -ENOMEM;
    }
    int rc0 = load_listener_list(x, c, arr);
    json_decref(dflt);
    return rc0;
}

static int load_listener_list(struct ctx *x, struct proxy_config *c, json_t *arr)
{
    static const char *const keys[] = { "name", "address", "tls", "redirect_https_port", "max_connections",
                                        "max_connections_per_ip", "header_timeout_ms", "idle_timeout_ms",
                                        "body_timeout_ms", "max_header_bytes", "max_body_bytes", "role", "mtls",
                                        NULL };
    static const char *const roles[] = { "gateway", "inbound", "outbound", NULL };
    c->listeners = calloc(json_array_size(arr), sizeof *c->listeners);
    if (!c->listeners)
        return -ENOMEM;
    size_t i;
    json_t *l;
    json_array_foreach(arr, i, l) {
        char p[64], *addr = NULL;
        snprintf(p, sizeof p, "$.listeners[%zu]", i);
        struct proxy_listener *li = &c->listeners[c->nlisteners++];
        uint32_t port = 0;
        int rc = only_keys(x, p, l, keys);
        if (rc == 0)
            rc = get_str(x, p, l, "name", true, &li->name);
        if (rc == 0)
            rc = get_str(x, p, l, "address", true, &addr);
        if (rc == 0 && net_addr_parse(str_from_cstr(addr), true, &li->addr) < 0)
            rc = fail(x, p, "address: expected \"HOST:PORT\" with a numeric host, got \"%s\"", addr);
        free(addr);
        json_t *tls = json_object_get(l, "tls");
        if (rc == 0 && tls)
            rc = load_tls(x, p, li, tls);
        if (rc == 0)
            rc = get_u32(x, p, l, "redirect_https_port", 1, 65535, 0, &port);
        li->redirect_https_port = (uint16_t)port;
        if (rc == 0 && tls && port)
            rc = fail(x, p, "redirect_https_port: only for a plain (non-TLS) listener");
        if (rc == 0)
            rc = get_u32(x, p, l, "max_connections", 1, 1000000, 0, &li->max_connections);
        if (rc == 0)
            rc = get_u32(x, p, l, "max_connections_per_ip", 1, 1000000, 0, &li->max_connections_per_ip);
        if (rc == 0)
            rc = get_u32(x, p, l, "header_timeout_ms", 10, 3600000, 0, &li->header_timeout_ms);
        if (rc == 0)
            rc = get_u32(x, p, l, "idle_timeout_ms", 10, 3600000, 0, &li->idle_timeout_ms);
        if (rc == 0)
            rc = get_u32(x, p, l, "body_timeout_ms", 10, 3600000, 0, &li->body_timeout_ms);
        if (rc == 0)
            rc = get_u32(x, p, l, "max_header_bytes", 1024, 1u << 20, 0, &li->max_header_bytes);
        if (rc == 0)
            rc = get_uint(x, p, l, "max_body_bytes", 1, 1ull << 30, 0, &li->max_body_bytes);
        int role = 0;
        if (rc == 0)
            rc = get_enum(x, p, l, "role", roles, PROXY_ROLE_GATEWAY, &role);
        li->role = (enum proxy_listener_role)role;
        json_t *m = json_object_get(l, "mtls");
        if (rc == 0 && m)
            rc = load_mtls(x, p, li, m);
        if (rc == 0 && li->role == PROXY_ROLE_INBOUND && (!li->ncerts || !li->client_ca_file))
            rc = fail(x, p, "an inbound listener needs tls.certificates (the workload certificate) and mtls.ca_file");
        if (rc == 0 && m && li->role != PROXY_ROLE_INBOUND)
            rc = fail(x, p, "mtls: only for a listener with role \"inbound\"");
        if (rc < 0)
            return rc;
        for (size_t j = 0; j + 1 < c->nlisteners; j++)
            if (!strcmp(c->listeners[j].name, li->name))
                return fail(x, p, "listener \"%s\" is defined twice", li->name);
    }
    return 0;
}

/* ["a", "b"] → a NULL-terminated copy; absent → 0 entries. */
static int load_strings(struct ctx *x, const char *path, json_t *o, const char *key, size_t max, char ***out,
                        size_t *n)
{
    json_t *a = json_object_get(o, key);
    *out = NULL;
    *n = 0;
    if (!a)
        return 0;
    if (!json_is_array(a) || json_array_size(a) == 0 || json_array_size(a) > max)
        return fail(x, path, "%s: expected a non-empty array of at most %zu strings", key, max);
    *out = calloc(json_array_size(a) + 1, sizeof **out);
    if (!*out)
        return -ENOMEM;
    size_t i;
    json_t *v;
    json_array_foreach(a, i, v) {
        if (!json_is_string(v) || !json_string_length(v) || json_string_length(v) > 1024)
            return fail(x, path, "%s[%zu]: expected a non-empty string", key, i);
        if (!((*out)[(*n)++] = strdup(json_string_value(v))))
            return -ENOMEM;
    }
    return 0;
}

static void free_strings(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

static void free_authz_policy(struct proxy_authz_policy *pol)
{
    free(pol->name);
    for (size_t i = 0; i < pol->nrules; i++) {
        struct proxy_authz_rule *r = &pol->rules[i];
        for (size_t j = 0; j < r->nfrom; j++) {
            struct proxy_authz_source *f = &r->from[j];
            free_strings(f->principals, f->nprincipals);
            free_strings(f->not_principals, f->nnot_principals);
            free_strings(f->namespaces, f->nnamespaces);
            free_strings(f->not_namespaces, f->nnot_namespaces);
        }
        for (size_t j = 0; j < r->nto; j++) {
            struct proxy_authz_operation *t = &r->to[j];
            free_strings(t->methods, t->nmethods);
            free_strings(t->not_methods, t->nnot_methods);
            free_strings(t->paths, t->npaths);
            free_strings(t->not_paths, t->nnot_paths);
        }
        free(r->from);
        free(r->to);
    }
    free(pol->rules);
}

static int load_authz_rule(struct ctx *x, const char *path, json_t *o, struct proxy_authz_rule *r)
{
    static const char *const keys[] = { "from", "to", NULL };
    static const char *const fkeys[] = { "principals", "not_principals", "namespaces", "not_namespaces", NULL };
    static const char *const tkeys[] = { "methods", "not_methods", "paths", "not_paths", NULL };
    int rc = only_keys(x, path, o, keys);
    if (rc < 0)
        return rc;
    json_t *from = json_object_get(o, "from"), *to = json_object_get(o, "to");
    if (from) {
        if (!json_is_array(from) || json_array_size(from) > 32)
            return fail(x, path, "from: expected an array of at most 32 sources");
        if (!(r->from = calloc(json_array_size(from) + 1, sizeof *r->from)))
            return -ENOMEM;
        size_t i;
        json_t *f;
        json_array_foreach(from, i, f) {
            char p[192];
            snprintf(p, sizeof p, "%s.from[%zu]", path, i);
            struct proxy_authz_source *s = &r->from[r->nfrom++];
            if ((rc = only_keys(x, p, f, fkeys)) < 0 ||
                (rc = load_strings(x, p, f, "principals", 256, &s->principals, &s->nprincipals)) < 0 ||
                (rc = load_strings(x, p, f, "not_principals", 256, &s->not_principals, &s->nnot_principals)) < 0 ||
                (rc = load_strings(x, p, f, "namespaces", 256, &s->namespaces, &s->nnamespaces)) < 0 ||
                (rc = load_strings(x, p, f, "not_namespaces", 256, &s->not_namespaces, &s->nnot_namespaces)) < 0)
                return rc;
        }
    }
    if (to) {
        if (!json_is_array(to) || json_array_size(to) > 32)
            return fail(x, path, "to: expected an array of at most 32 operations");
        if (!(r->to = calloc(json_array_size(to) + 1, sizeof *r->to)))
            return -ENOMEM;
        size_t i;
        json_t *t;
        json_array_foreach(to, i, t) {
            char p[192];
            snprintf(p, sizeof p, "%s.to[%zu]", path, i);
            struct proxy_authz_operation *op = &r->to[r->nto++];
            if ((rc = only_keys(x, p, t, tkeys)) < 0 ||
                (rc = load_strings(x, p, t, "methods", 32, &op->methods, &op->nmethods)) < 0 ||
                (rc = load_strings(x, p, t, "not_methods", 32, &op->not_methods, &op->nnot_methods)) < 0 ||
                (rc = load_strings(x, p, t, "paths", 256, &op->paths, &op->npaths)) < 0 ||
                (rc = load_strings(x, p, t, "not_paths", 256, &op->not_paths, &op->nnot_paths)) < 0)
                return rc;
        }
    }
    return 0;
}

static int load_authz(struct ctx *x, struct proxy_config *c, json_t *arr)
{
    static const char *const keys[] = { "name", "action", "rules", NULL };
    static const char *const actions[] = { "ALLOW", "DENY", NULL };
    if (!arr)
        return 0;
    if (!json_is_array(arr) || json_array_size(arr) > 256)
        return fail(x, "$.authorization", "expected an array of at most 256 policies");
    if (!(c->authz = calloc(json_array_size(arr) + 1, sizeof *c->authz)))
        return -ENOMEM;
    size_t i;
    json_t *o;
    json_array_foreach(arr, i, o) {
        char p[64];
        snprintf(p, sizeof p, "$.authorization[%zu]", i);
        struct proxy_authz_policy *pol = &c->authz[c->nauthz++];
        int action = 0, rc = only_keys(x, p, o, keys);
        if (rc == 0)
            rc = get_str(x, p, o, "name", true, &pol->name);
        if (rc == 0)
            rc = get_enum(x, p, o, "action", actions, PROXY_AUTHZ_ALLOW, &action);
        if (rc < 0)
            return rc;
        pol->action = (enum proxy_authz_action)action;
        json_t *rules = json_object_get(o, "rules");
        if (!rules)
            continue;
        if (!json_is_array(rules) || json_array_size(rules) > 64)
            return fail(x, p, "rules: expected an array of at most 64 rules");
        if (!(pol->rules = calloc(json_array_size(rules) + 1, sizeof *pol->rules)))
            return -ENOMEM;
        size_t j;
        json_t *r;
        json_array_foreach(rules, j, r) {
            char rp[96];
            snprintf(rp, sizeof rp, "%s.rules[%zu]", p, j);
            if ((rc = load_authz_rule(x, rp, r, &pol->rules[pol->nrules++])) < 0)
                return rc;
        }
    }
    return 0;
}

static int load_identity(struct ctx *x, struct proxy_config *c, json_t *o)
{
    static const char *const keys[] = { "workload", "spiffe_id", "region", "zone", NULL };
    int rc;
    if (!o)
        return (c->workload = strdup("")) ? 0 : -ENOMEM;
    if ((rc = only_keys(x, "$.identity", o, keys)) < 0 ||
        (rc = get_str(x, "$.identity", o, "workload", false, &c->workload)) < 0 ||
        (rc = get_str(x, "$.identity", o, "spiffe_id", false, &c->spiffe_id)) < 0 ||
        (rc = get_str(x, "$.identity", o, "region", false, &c->region)) < 0 ||
        (rc = get_str(x, "$.identity", o, "zone", false, &c->zone)) < 0)
        return rc;
    if (c->spiffe_id && strncmp(c->spiffe_id, "spiffe://", 9))
        return fail(x, "$.identity", "spiffe_id: expected spiffe://TRUST-DOMAIN/ns/NS/sa/SA");
    if (!c->workload && !(c->workload = strdup("")))
        return -ENOMEM;
    return 0;
}

static int load_app(struct ctx *x, struct proxy_config *c, json_t *o)
{
    static const char *const keys[] = { "ready_url", "exit_wait_ms", NULL };
    c->app_exit_wait_ms = 30000;
    if (!o)
        return 0;
    int rc = only_keys(x, "$.app", o, keys);
    if (rc == 0)
        rc = get_str(x, "$.app", o, "ready_url", true, &c->app_ready_url);
    if (rc == 0 && strncmp(c->app_ready_url, "http://", 7))
        rc = fail(x, "$.app", "ready_url: expected http://HOST:PORT/path with a numeric host");
    if (rc == 0)
        rc = get_u32(x, "$.app", o, "exit_wait_ms", 0, 3600000, 30000, &c->app_exit_wait_ms);
    return rc;
}

static int load_misc(struct ctx *x, struct proxy_config *c, json_t *doc)
{
    int rc;
    json_t *v;
    if ((v = json_object_get(doc, "version"))) {
        if (!json_is_string(v) || json_string_length(v) > 128)
            return fail(x, "$.version", "expected a string of at most 128 characters");
    }
    if (!(c->version = strdup(v ? json_string_value(v) : "")))
        return -ENOMEM;
    if ((v = json_object_get(doc, "redis"))) {
        static const char *const keys[] = { "url", NULL };
        if ((rc = only_keys(x, "$.redis", v, keys)) < 0 || (rc = get_str(x, "$.redis", v, "url", true, &c->redis_url)) < 0)
            return rc;
        if (strncmp(c->redis_url, "redis://", 8))
            return fail(x, "$.redis.url", "expected redis://HOST:PORT");
    }
    if ((v = json_object_get(doc, "admin"))) {
        static const char *const keys[] = { "address", NULL };
        char *addr = NULL;
        if ((rc = only_keys(x, "$.admin", v, keys)) < 0 || (rc = get_str(x, "$.admin", v, "address", true, &addr)) < 0)
            return rc;
        if (net_addr_parse(str_from_cstr(addr), true, &c->admin_addr) < 0)
            rc = fail(x, "$.admin.address", "expected \"HOST:PORT\" with a numeric host, got \"%s\"", addr);
        free(addr);
        if (rc < 0)
            return rc;
        c->admin_enabled = true;
    }
    v = json_object_get(doc, "waf");
    static const char *const wkeys[] = { "crs_setup", "rules_dir", "threads", NULL };
    uint32_t threads = 1;
    if (v && ((rc = only_keys(x, "$.waf", v, wkeys)) < 0 ||
              (rc = get_str(x, "$.waf", v, "crs_setup", false, &c->waf.crs_setup)) < 0 ||
              (rc = get_str(x, "$.waf", v, "rules_dir", false, &c->waf.rules_dir)) < 0 ||
              (rc = get_u32(x, "$.waf", v, "threads", 1, 64, 1, &threads)) < 0))
        return rc;
    c->waf.threads = (int)threads;
    if (!c->waf.crs_setup && !(c->waf.crs_setup = strdup("/etc/modsecurity/crs/crs-setup.conf")))
        return -ENOMEM;
    if (!c->waf.rules_dir && !(c->waf.rules_dir = strdup("/usr/share/modsecurity-crs/rules")))
        return -ENOMEM;
    return 0;
}

int proxy_config_parse(const char *name, struct str text, struct proxy_config **out, char *err, size_t errsz)
{
    struct ctx x = { name, err, errsz };
    json_t *doc;
    struct json_error jerr;
    if (json_parse_body(text, 32, &doc, &jerr) < 0) {
        snprintf(err, errsz, "%s:%d:%d: %s", name, jerr.line, jerr.column, jerr.message);
        return -EINVAL;
    }
    struct proxy_config *c = calloc(1, sizeof *c);
    static const char *const keys[] = { "version", "listeners", "routes", "clusters", "jwt_providers",
                                        "rate_limits", "redis", "admin", "waf", "identity", "authorization",
                                        "app", NULL };
    int rc = c ? only_keys(&x, "$", doc, keys) : -ENOMEM;
    if (rc == 0)
        atomic_init(&c->refs, 1);
    if (rc == 0)
        rc = load_misc(&x, c, doc);
    if (rc == 0)
        rc = load_identity(&x, c, json_object_get(doc, "identity"));
    if (rc == 0)
        rc = load_authz(&x, c, json_object_get(doc, "authorization"));
    if (rc == 0)
        rc = load_app(&x, c, json_object_get(doc, "app"));
    if (rc == 0)
        rc = load_listeners(&x, c, json_object_get(doc, "listeners"));
    if (rc == 0)
        rc = load_clusters(&x, c, json_object_get(doc, "clusters"));
    if (rc == 0)
        rc = load_jwt_providers(&x, c, json_object_get(doc, "jwt_providers"));
    if (rc == 0)
        rc = load_rate_limits(&x, c, json_object_get(doc, "rate_limits"));
    if (rc == 0)
        rc = load_routes(&x, c, json_object_get(doc, "routes"));
    json_decref(doc);
    if (rc < 0) {
        if (rc == -ENOMEM)
            snprintf(err, errsz, "%s: out of memory", name);
        proxy_config_free(c);
        return rc;
    }
    *out = c;
    return 0;
}

int proxy_config_load(const char *path, struct proxy_config **out, char *err, size_t errsz)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        int e = errno;
        snprintf(err, errsz, "%s: %s", path, strerror(e));
        return -e;
    }
    /* 4 MiB: far above any real config; past it the file is refused. */
    char *text = malloc(4 << 20);
    size_t n = text ? fread(text, 1, 4 << 20, f) : 0;
    bool too_big = text && !feof(f);
    fclose(f);
    if (!text) {
        snprintf(err, errsz, "%s: out of memory", path);
        return -ENOMEM;
    }
    if (too_big) {
        free(text);
        snprintf(err, errsz, "%s: $: larger than 4 MiB", path);
        return -EFBIG;
    }
    int rc = proxy_config_parse(path, str_make(text, n), out, err, errsz);
    free(text);
    return rc;
}

int proxy_config_quick(const char *from, const char *to, const char *cert_file, const char *key_file,
                       struct proxy_config **out, char *err, size_t errsz)
{
    if (strncmp(to, "http://", 7)) {
        snprintf(err, errsz, "--to: expected http://HOST:PORT, got \"%s\"", to);
        return -EINVAL;
    }
    const char *hp = to + 7;
    size_t hl = strcspn(hp, "/");
    if (hp[hl] && strcmp(hp + hl, "/")) {
        snprintf(err, errsz, "--to: expected http://HOST:PORT without a path, got \"%s\"", to);
        return -EINVAL;
    }
    if (!!cert_file != !!key_file) {
        snprintf(err, errsz, "%s: --cert and --key go together", cert_file ? "--key" : "--cert");
        return -EINVAL;
    }
    json_t *l = json_pack("{s:s, s:s}", "name", cert_file ? "https" : "http", "address", from);
    if (l && cert_file)
        json_object_set_new(l, "tls", json_pack("{s:[{s:s, s:s}]}", "certificates", "cert_file", cert_file,
                                                "key_file", key_file));
    json_t *doc = json_pack("{s:s, s:[o], s:[{s:s, s:[s%]}], s:[{s:s, s:s, s:s}]}", "version", "quick",
                            "listeners", l, "clusters", "name", "upstream", "endpoints", hp, hl, "routes",
                            "name", "all", "prefix", "/", "cluster", "upstream");
    char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    if (!text) {
        snprintf(err, errsz, "out of memory");
        return -ENOMEM;
    }
    int rc = proxy_config_parse("command line", str_from_cstr(text), out, err, errsz);
    free(text);
    return rc;
}

struct proxy_config *proxy_config_ref(struct proxy_config *c)
{
    atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
    return c;
}

void proxy_config_unref(struct proxy_config *c)
{
    if (c && atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) == 1)
        proxy_config_free(c);
}

static void free_header_rules(struct proxy_header_rules *hr)
{
    for (size_t i = 0; i < hr->nset; i++) {
        free(hr->set[i].name);
        free(hr->set[i].value);
    }
    for (size_t i = 0; i < hr->nadd; i++) {
        free(hr->add[i].name);
        free(hr->add[i].value);
    }
    for (size_t i = 0; i < hr->nremove; i++)
        free(hr->remove[i]);
    free(hr->set);
    free(hr->add);
    free(hr->remove);
}

void proxy_config_free(struct proxy_config *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->nlisteners; i++) {
        struct proxy_listener *l = &c->listeners[i];
        free(l->name);
        for (size_t j = 0; j < l->ncerts; j++) {
            free(l->cert_files[j]);
            free(l->key_files[j]);
        }
        free(l->cert_files);
        free(l->key_files);
        free(l->client_ca_file);
    }
    for (size_t i = 0; i < c->nroutes; i++) {
        struct proxy_route *r = &c->routes[i];
        free(r->name);
        free(r->host);
        free(r->prefix);
        free(r->exact);
        free(r->regex_src);
        free_regex(r->regex);
        free(r->rewrite_prefix);
        free(r->rewrite_host);
        for (size_t j = 0; j < r->nmethods; j++)
            free(r->methods[j]);
        for (size_t j = 0; j < r->nheaders; j++) {
            free(r->headers[j].name);
            free(r->headers[j].exact);
            free(r->headers[j].prefix);
            free_regex(r->headers[j].regex);
        }
        free(r->headers);
        free(r->destinations);
        free(r->mirror);
        free(r->fault);
        for (size_t j = 0; j < r->nlisteners; j++)
            free(r->listeners[j]);
        free(r->listeners);
        if (r->redirect) {
            free(r->redirect->scheme);
            free(r->redirect->host);
            free(r->redirect->path);
            free(r->redirect->prefix);
            free(r->redirect);
        }
        if (r->direct) {
            free(r->direct->body);
            free(r->direct->content_type);
            free(r->direct);
        }
        free_header_rules(&r->request_headers);
        free_header_rules(&r->response_headers);
    }
    for (size_t i = 0; i < c->nclusters; i++) {
        struct proxy_cluster *k = &c->clusters[i];
        resil_cluster_free(k->resil);
        free(k->name);
        for (size_t j = 0; j < k->nendpoints; j++)
            free_labels(k->endpoints[j].labels, k->endpoints[j].nlabels);
        free(k->endpoints);
        free(k->health.path);
        for (size_t j = 0; j < k->nsubsets; j++) {
            free(k->subsets[j].name);
            free_labels(k->subsets[j].labels, k->subsets[j].nlabels);
            free(k->subsets[j].members);
        }
        free(k->subsets);
        if (k->tls) {
            free(k->tls->cert_file);
            free(k->tls->key_file);
            free(k->tls->ca_file);
            free(k->tls->spiffe_id);
            free(k->tls->sni);
            free(k->tls);
        }
    }
    for (size_t i = 0; i < c->nauthz; i++)
        free_authz_policy(&c->authz[i]);
    free(c->authz);
    free(c->workload);
    free(c->spiffe_id);
    free(c->region);
    free(c->zone);
    free(c->app_ready_url);
    for (size_t i = 0; i < c->njwt_providers; i++) {
        struct proxy_jwt_provider *p = &c->jwt_providers[i];
        free(p->name);
        free(p->issuer);
        free(p->jwks_uri);
        for (size_t j = 0; j < p->naudiences; j++)
            free(p->audiences[j]);
        free(p->audiences);
        for (size_t j = 0; j < p->nclaims; j++) {
            free(p->claims_to_headers[j].claim);
            free(p->claims_to_headers[j].header);
        }
        free(p->claims_to_headers);
    }
    for (size_t i = 0; i < c->nrate_limits; i++) {
        free(c->rate_limits[i].name);
        free(c->rate_limits[i].header);
    }
    free(c->jwt_providers);
    free(c->rate_limits);
    free(c->redis_url);
    free(c->waf.crs_setup);
    free(c->waf.rules_dir);
    free(c->version);
    free(c->listeners);
    free(c->routes);
    free(c->clusters);
    free(c);
}
