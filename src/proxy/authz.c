#include "proxy/authz.h"

#include <ctype.h>
#include <string.h>

static struct str strip_scheme(struct str s)
{
    if (str_has_prefix(s, STR_LIT("spiffe://")))
        return str_make(s.p + 9, s.n - 9);
    return s;
}

/* "*", "prefix*", "*suffix", or exact. */
static bool str_match(const char *pattern, struct str v)
{
    struct str p = str_from_cstr(pattern);
    if (p.n == 1 && p.p[0] == '*')
        return true;
    if (p.n && p.p[p.n - 1] == '*')
        return str_has_prefix(v, str_make(p.p, p.n - 1));
    if (p.n && p.p[0] == '*') {
        struct str suf = str_make(p.p + 1, p.n - 1);
        return v.n >= suf.n && !memcmp(v.p + v.n - suf.n, suf.p, suf.n);
    }
    return str_eq(p, v);
}

static bool any_match(char *const *patterns, size_t n, struct str v, bool present, bool principal)
{
    if (!present)
        return false;
    for (size_t i = 0; i < n; i++) {
        struct str pat = str_from_cstr(patterns[i]);
        if (principal)
            pat = strip_scheme(pat);
        char buf[1100];
        if (pat.n >= sizeof buf)
            continue;
        memcpy(buf, pat.p, pat.n);
        buf[pat.n] = '\0';
        if (str_match(buf, v))
            return true;
    }
    return false;
}

/* The namespace of "td/ns/<ns>/sa/<sa>". */
static struct str namespace_of(struct str id)
{
    const char *p = id.p, *end = id.p + id.n;
    const char *ns = NULL;
    for (const char *q = p; q + 4 <= end; q++)
        if (!memcmp(q, "/ns/", 4)) {
            ns = q + 4;
            break;
        }
    if (!ns)
        return STR_NULL;
    const char *slash = memchr(ns, '/', (size_t)(end - ns));
    return str_make(ns, (size_t)((slash ? slash : end) - ns));
}

static bool source_matches(const struct proxy_authz_source *s, const struct authz_input *in)
{
    bool has = in->principal && *in->principal;
    struct str id = has ? strip_scheme(str_from_cstr(in->principal)) : STR_NULL;
    struct str ns = has ? namespace_of(id) : STR_NULL;
    if (s->nprincipals && !any_match(s->principals, s->nprincipals, id, has, true))
        return false;
    if (s->nnot_principals && any_match(s->not_principals, s->nnot_principals, id, has, true))
        return false;
    if (s->nnamespaces && !any_match(s->namespaces, s->nnamespaces, ns, ns.n > 0, false))
        return false;
    if (s->nnot_namespaces && any_match(s->not_namespaces, s->nnot_namespaces, ns, ns.n > 0, false))
        return false;
    return true;
}

static bool operation_matches(const struct proxy_authz_operation *o, const struct authz_input *in)
{
    if (o->nmethods && !any_match(o->methods, o->nmethods, in->method, true, false))
        return false;
    if (o->nnot_methods && any_match(o->not_methods, o->nnot_methods, in->method, true, false))
        return false;
    if (o->npaths && !any_match(o->paths, o->npaths, in->path, true, false))
        return false;
    if (o->nnot_paths && any_match(o->not_paths, o->nnot_paths, in->path, true, false))
        return false;
    return true;
}

static int policy_matches(const struct proxy_authz_policy *p, const struct authz_input *in)
{
    for (size_t i = 0; i < p->nrules; i++) {
        const struct proxy_authz_rule *r = &p->rules[i];
        bool from = r->nfrom == 0, to = r->nto == 0;
        for (size_t j = 0; j < r->nfrom && !from; j++)
            from = source_matches(&r->from[j], in);
        for (size_t j = 0; j < r->nto && !to; j++)
            to = operation_matches(&r->to[j], in);
        if (from && to)
            return (int)i;
    }
    return -1;
}

void authz_evaluate(const struct proxy_authz_policy *policies, size_t n, const struct authz_input *in,
                    struct authz_decision *out)
{
    bool any_allow = false;
    for (size_t i = 0; i < n; i++) {
        if (policies[i].action != PROXY_AUTHZ_DENY) {
            any_allow = true;
            continue;
        }
        int r = policy_matches(&policies[i], in);
        if (r >= 0) {
            *out = (struct authz_decision){ false, policies[i].name, r };
            return;
        }
    }
    for (size_t i = 0; i < n; i++) {
        if (policies[i].action != PROXY_AUTHZ_ALLOW)
            continue;
        int r = policy_matches(&policies[i], in);
        if (r >= 0) {
            *out = (struct authz_decision){ true, policies[i].name, r };
            return;
        }
    }
    *out = (struct authz_decision){ !any_allow, "", -1 };
}

size_t authz_normalize_path(struct str in, char *out)
{
    /* 1. decode unreserved escapes, upper-case the others; merge slashes */
    size_t n = 0;
    for (size_t i = 0; i < in.n; i++) {
        char c = in.p[i];
        if (c == '%' && i + 2 < in.n + 0 && str_hex_digit(in.p[i + 1]) >= 0 && str_hex_digit(in.p[i + 2]) >= 0) {
            char d = (char)(str_hex_digit(in.p[i + 1]) * 16 + str_hex_digit(in.p[i + 2]));
            bool unreserved = (d >= 'a' && d <= 'z') || (d >= 'A' && d <= 'Z') || (d >= '0' && d <= '9') || d == '-' ||
                              d == '.' || d == '_' || d == '~';
            if (unreserved) {
                c = d;
                i += 2;
            } else {
                out[n++] = '%';
                out[n++] = (char)toupper((unsigned char)in.p[i + 1]);
                out[n++] = (char)toupper((unsigned char)in.p[i + 2]);
                i += 2;
                continue;
            }
        }
        if (c == '/' && n && out[n - 1] == '/')
            continue;
        out[n++] = c;
    }
    /* 2. remove dot segments (RFC 3986 §5.2.4), in place */
    size_t r = 0, w = 0;
    while (r < n) {
        if (out[r] == '/' && r + 1 < n && out[r + 1] == '.' && (r + 2 == n || out[r + 2] == '/')) {
            r += 2; /* "/." */
            if (r == n)
                out[w++] = '/';
            continue;
        }
        if (out[r] == '/' && r + 2 < n && out[r + 1] == '.' && out[r + 2] == '.' && (r + 3 == n || out[r + 3] == '/')) {
            r += 3; /* "/..": drop the last output segment */
            while (w > 0 && out[w - 1] != '/')
                w--;
            if (w > 0)
                w--;
            if (r == n)
                out[w++] = '/';
            continue;
        }
        do
            out[w++] = out[r++];
        while (r < n && out[r] != '/');
    }
    if (w == 0)
        out[w++] = '/';
    out[w] = '\0';
    return w;
}
