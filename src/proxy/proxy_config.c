#include "proxy/proxy_config.h"

#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/json.h"

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

static struct proxy_cluster *find_cluster(struct proxy_config *c, const char *name)
{
    for (size_t i = 0; i < c->nclusters; i++)
        if (!strcmp(c->clusters[i].name, name))
            return &c->clusters[i];
    return NULL;
}

static int load_clusters(struct ctx *x, struct proxy_config *c, json_t *arr)
{
    static const char *const keys[] = { "name", "endpoints", NULL };
    if (!json_is_array(arr) || json_array_size(arr) == 0)
        return fail(x, "$.clusters", "expected a non-empty array");
    c->clusters = calloc(json_array_size(arr), sizeof *c->clusters);
    if (!c->clusters)
        return -ENOMEM;
    size_t i;
    json_t *cl;
    json_array_foreach(arr, i, cl) {
        char p[64];
        snprintf(p, sizeof p, "$.clusters[%zu]", i);
        struct proxy_cluster *k = &c->clusters[c->nclusters++];
        int rc = only_keys(x, p, cl, keys);
        if (rc == 0)
            rc = get_str(x, p, cl, "name", true, &k->name);
        if (rc < 0)
            return rc;
        if (find_cluster(c, k->name) != k)
            return fail(x, p, "cluster \"%s\" is defined twice", k->name);
        json_t *eps = json_object_get(cl, "endpoints");
        if (!json_is_array(eps) || json_array_size(eps) == 0 || json_array_size(eps) > 1024)
            return fail(x, p, "endpoints: expected 1..1024 \"HOST:PORT\" strings");
        k->endpoints = calloc(json_array_size(eps), sizeof *k->endpoints);
        if (!k->endpoints)
            return -ENOMEM;
        size_t j;
        json_t *ep;
        json_array_foreach(eps, j, ep) {
            if (!json_is_string(ep) || net_addr_parse(str_from_cstr(json_string_value(ep)), false,
                                                      &k->endpoints[k->nendpoints]) < 0)
                return fail(x, p, "endpoints[%zu]: expected \"HOST:PORT\" with a numeric host", j);
            k->nendpoints++;
        }
    }
    return 0;
}

static int load_routes(struct ctx *x, struct proxy_config *c, json_t *arr)
{
    static const char *const keys[] = { "name", "host", "prefix", "exact", "methods", "cluster", "timeout_ms",
                                        "rewrite_prefix", NULL };
    if (!json_is_array(arr))
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
        char *cluster = NULL;
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
            rc = get_str(x, p, r, "rewrite_prefix", false, &rt->rewrite_prefix);
        if (rc == 0)
            rc = get_str(x, p, r, "cluster", true, &cluster);
        if (rc < 0) {
            free(cluster);
            return rc;
        }
        rt->cluster = find_cluster(c, cluster);
        if (!rt->cluster) {
            rc = fail(x, p, "cluster: no cluster named \"%s\"", cluster);
            free(cluster);
            return rc;
        }
        free(cluster);
        if (!!rt->prefix == !!rt->exact)
            return fail(x, p, "exactly one of \"prefix\" and \"exact\" is required");
        const char *path = rt->prefix ? rt->prefix : rt->exact;
        if (path[0] != '/')
            return fail(x, p, "%s: must start with '/'", rt->prefix ? "prefix" : "exact");
        if (rt->rewrite_prefix && (!rt->prefix || rt->rewrite_prefix[0] != '/'))
            return fail(x, p, "rewrite_prefix: needs \"prefix\" and must start with '/'");
        json_t *t = json_object_get(r, "timeout_ms");
        if (t) {
            if (!json_is_integer(t) || json_integer_value(t) < 1 || json_integer_value(t) > 3600000)
                return fail(x, p, "timeout_ms: expected an integer in 1..3600000");
            rt->timeout_ms = (uint32_t)json_integer_value(t);
        }
        json_t *m = json_object_get(r, "methods");
        if (m) {
            if (!json_is_array(m) || json_array_size(m) > PROXY_MAX_METHODS)
                return fail(x, p, "methods: expected an array of at most %d methods", PROXY_MAX_METHODS);
            size_t j;
            json_t *mv;
            json_array_foreach(m, j, mv) {
                if (!json_is_string(mv) || json_string_length(mv) == 0 || json_string_length(mv) > 16)
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
    static const char *const keys[] = { "certificates", NULL };
    static const char *const ckeys[] = { "cert_file", "key_file", NULL };
    char p[96];
    snprintf(p, sizeof p, "%s.tls", path);
    int rc = only_keys(x, p, tls, keys);
    if (rc < 0)
        return rc;
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

static int load_listeners(struct ctx *x, struct proxy_config *c, json_t *arr)
{
    static const char *const keys[] = { "name", "address", "tls", NULL };
    if (!json_is_array(arr) || json_array_size(arr) == 0 || json_array_size(arr) > 16)
        return fail(x, "$.listeners", "expected 1..16 listeners");
    c->listeners = calloc(json_array_size(arr), sizeof *c->listeners);
    if (!c->listeners)
        return -ENOMEM;
    size_t i;
    json_t *l;
    json_array_foreach(arr, i, l) {
        char p[64], *addr = NULL;
        snprintf(p, sizeof p, "$.listeners[%zu]", i);
        struct proxy_listener *li = &c->listeners[c->nlisteners++];
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
        if (rc < 0)
            return rc;
    }
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
    static const char *const keys[] = { "version", "listeners", "routes", "clusters", NULL };
    int rc = c ? only_keys(&x, "$", doc, keys) : -ENOMEM;
    if (rc == 0)
        rc = load_listeners(&x, c, json_object_get(doc, "listeners"));
    if (rc == 0)
        rc = load_clusters(&x, c, json_object_get(doc, "clusters"));
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
    }
    for (size_t i = 0; i < c->nroutes; i++) {
        struct proxy_route *r = &c->routes[i];
        free(r->name);
        free(r->host);
        free(r->prefix);
        free(r->exact);
        free(r->rewrite_prefix);
        for (size_t j = 0; j < r->nmethods; j++)
            free(r->methods[j]);
    }
    for (size_t i = 0; i < c->nclusters; i++) {
        free(c->clusters[i].name);
        free(c->clusters[i].endpoints);
    }
    free(c->listeners);
    free(c->routes);
    free(c->clusters);
    free(c);
}

static bool host_matches(const char *pattern, struct str host)
{
    /* Host without a port; ports do not take part in routing. */
    const char *colon = host.n && host.p[0] != '[' ? memchr(host.p, ':', host.n) : NULL;
    if (colon)
        host.n = (size_t)(colon - host.p);
    if (!pattern || !strcmp(pattern, "*"))
        return true;
    if (pattern[0] == '*' && pattern[1] == '.') {
        struct str suffix = str_from_cstr(pattern + 1); /* ".example.test" */
        return host.n > suffix.n && str_eq_nocase(str_make(host.p + host.n - suffix.n, suffix.n), suffix);
    }
    return str_eq_nocase(host, str_from_cstr(pattern));
}

const struct proxy_route *proxy_route_match(const struct proxy_config *c, struct str host, struct str path,
                                            struct str method)
{
    for (size_t i = 0; i < c->nroutes; i++) {
        const struct proxy_route *r = &c->routes[i];
        if (!host_matches(r->host, host))
            continue;
        if (r->exact && !str_eq(path, str_from_cstr(r->exact)))
            continue;
        if (r->prefix) {
            struct str pre = str_from_cstr(r->prefix);
            /* "/v1/users" matches "/v1/users" and "/v1/users/..." but not "/v1/usersx". */
            if (!str_has_prefix(path, pre))
                continue;
            if (path.n > pre.n && pre.p[pre.n - 1] != '/' && path.p[pre.n] != '/' && path.p[pre.n] != '?')
                continue;
        }
        if (r->nmethods) {
            bool ok = false;
            for (size_t j = 0; j < r->nmethods && !ok; j++)
                ok = str_eq(method, str_from_cstr(r->methods[j]));
            if (!ok)
                continue;
        }
        return r;
    }
    return NULL;
}
