/* proxy_route.c — matching a request against a loaded config's routes
 * (request time, every worker), apart from parsing them (proxy_config.c). */
#include <stdlib.h>
#include <string.h>

#include "core/http1_parse.h"
#include "proxy/proxy_config.h"

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

/* regexec needs a NUL-terminated string: copy short inputs to the stack. */
static bool regex_matches(const regex_t *re, struct str s)
{
    char small[1024];
    char *p = s.n < sizeof small ? small : malloc(s.n + 1);
    if (!p)
        return false;
    memcpy(p, s.p, s.n);
    p[s.n] = '\0';
    bool ok = memchr(p, '\0', s.n) == NULL && regexec(re, p, 0, NULL, 0) == 0;
    if (p != small)
        free(p);
    return ok;
}

static bool header_matches(const struct proxy_header_match *m, const struct proxy_match_input *in)
{
    const struct http1_header *h = http1_find_header(in->headers, in->nheaders, str_from_cstr(m->name));
    bool ok = h != NULL;
    if (ok && m->exact)
        ok = str_eq(h->value, str_from_cstr(m->exact));
    else if (ok && m->prefix)
        ok = str_has_prefix(h->value, str_from_cstr(m->prefix));
    else if (ok && m->regex)
        ok = regex_matches(m->regex, h->value);
    return ok != m->invert;
}

const struct proxy_route *proxy_route_match(const struct proxy_config *c, const struct proxy_match_input *in)
{
    for (size_t i = 0; i < c->nroutes; i++) {
        const struct proxy_route *r = &c->routes[i];
        if (r->nlisteners) {
            bool on = false;
            for (size_t j = 0; j < r->nlisteners && in->listener && !on; j++)
                on = !strcmp(r->listeners[j], in->listener);
            if (!on)
                continue;
        }
        if (!host_matches(r->host, in->host))
            continue;
        if (r->exact && !str_eq(in->path, str_from_cstr(r->exact)))
            continue;
        if (r->prefix) {
            struct str pre = str_from_cstr(r->prefix), path = in->path;
            /* "/v1/users" matches "/v1/users" and "/v1/users/..." but not "/v1/usersx". */
            if (!str_has_prefix(path, pre))
                continue;
            if (path.n > pre.n && pre.p[pre.n - 1] != '/' && path.p[pre.n] != '/')
                continue;
        }
        if (r->regex && !regex_matches(r->regex, in->path))
            continue;
        if (r->nmethods) {
            bool ok = false;
            for (size_t j = 0; j < r->nmethods && !ok; j++)
                ok = str_eq(in->method, str_from_cstr(r->methods[j]));
            if (!ok)
                continue;
        }
        bool ok = true;
        for (size_t j = 0; j < r->nheaders && ok; j++)
            ok = header_matches(&r->headers[j], in);
        if (ok)
            return r;
    }
    return NULL;
}

const struct proxy_destination *proxy_route_pick(const struct proxy_route *r, uint32_t rnd)
{
    if (r->ndestinations == 1)
        return &r->destinations[0];
    uint32_t at = rnd % r->total_weight;
    for (size_t i = 0; i < r->ndestinations; i++) {
        if (at < r->destinations[i].weight)
            return &r->destinations[i];
        at -= r->destinations[i].weight;
    }
    return &r->destinations[r->ndestinations - 1];
}
