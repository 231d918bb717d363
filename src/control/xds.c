/* xds.c — the proxy protocol's server side: config long-poll and CSRs.
 *
 * A long-poll is a struct xds_poll holding the service_req until the
 * proxy's version changes (xds_set_config answers it), its wait runs out
 * (its timer answers 304) or the client leaves (service_req_on_abort
 * forgets it). Everything runs on the service's one worker loop, so the
 * lists need no lock. */
#include "control/xds.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "core/log.h"

#define XDS_DEFAULT_WAIT_S 30
#define XDS_MAX_WAIT_S 300
/* 8: a proxy has one poll in flight; a few more cover a reconnect racing
 * the old connection's close. Past it a poll is refused (429). */
#define XDS_MAX_POLLS_PER_PROXY 8
#define XDS_MAX_VERSION 256

struct xds_poll {
    struct xds_poll *next, **pprev;
    struct xds_proxy *p;
    struct service_req *r;
    struct loop_timer timer;
};

struct xds_proxy {
    struct xds_proxy *next;
    char *id;
    unsigned char token_hash[32]; /* SHA-256: compared in constant time, whatever the lengths */
    char *spiffe_id;
    char **dns, **ips;
    size_t ndns, nips;
    int64_t ttl_s;
    char *version, *json; /* NULL until the first xds_set_config */
    size_t len;
    char *acked;
    struct xds_poll *polls;
    size_t npolls;
};

struct xds {
    struct ca *ca;
    int64_t cert_ttl_s;
    struct xds_proxy *proxies;
};

struct xds *xds_new(struct ca *ca, int64_t cert_ttl_s)
{
    struct xds *x = calloc(1, sizeof *x);
    if (x) {
        x->ca = ca;
        x->cert_ttl_s = cert_ttl_s;
    }
    return x;
}

/* ---- polls ------------------------------------------------------------------ */

static void poll_unlink(struct xds_poll *q)
{
    loop_timer_stop(&q->timer);
    *q->pprev = q->next;
    if (q->next)
        q->next->pprev = q->pprev;
    q->p->npolls--;
}

static void reply_config(struct service_req *r, const struct xds_proxy *p)
{
    if (service_req_add_header(r, "x-strata-config-version", p->version) < 0) {
        service_reply_error(r, 503, "out_of_memory", "out of memory");
        return;
    }
    service_reply(r, 200, "application/json", str_make(p->json, p->len));
}

/* Answers q (status 200: the config, 304, or 404 for a removed proxy) and frees it. */
static void poll_answer(struct xds_poll *q, int status)
{
    struct service_req *r = q->r;
    struct xds_proxy *p = q->p;
    service_req_on_abort(r, NULL, NULL);
    poll_unlink(q);
    free(q);
    if (status == 200)
        reply_config(r, p);
    else if (status == 304)
        service_reply(r, 304, NULL, STR_NULL);
    else
        service_reply_error(r, 404, "proxy_not_found", "the proxy was removed from the control plane");
}

static void poll_timeout(struct loop_timer *t)
{
    poll_answer(t->data, 304);
}

static void poll_abort(struct service_req *r, void *arg)
{
    (void)r;
    struct xds_poll *q = arg;
    poll_unlink(q);
    free(q);
}

/* ---- proxies ------------------------------------------------------------------ */

static struct xds_proxy *find(const struct xds *x, struct str id)
{
    for (struct xds_proxy *p = x->proxies; p; p = p->next)
        if (str_eq(str_from_cstr(p->id), id))
            return p;
    return NULL;
}

static void proxy_free(struct xds_proxy *p)
{
    while (p->polls)
        poll_answer(p->polls, 404);
    for (size_t i = 0; i < p->ndns; i++)
        free(p->dns[i]);
    for (size_t i = 0; i < p->nips; i++)
        free(p->ips[i]);
    free(p->dns);
    free(p->ips);
    free(p->id);
    free(p->spiffe_id);
    free(p->version);
    free(p->json);
    free(p->acked);
    OPENSSL_cleanse(p->token_hash, sizeof p->token_hash);
    free(p);
}

static void token_hash(struct str token, unsigned char out[32])
{
    unsigned int n = 32;
    if (EVP_Digest(token.p ? token.p : "", token.n, out, &n, EVP_sha256(), NULL) != 1)
        memset(out, 0, 32); /* no token hashes to zeros with SHA-256: nothing will match */
}

static char **copy_strings(const char *const *v, size_t n, bool *ok)
{
    if (!n)
        return NULL;
    char **c = calloc(n, sizeof *c);
    for (size_t i = 0; c && i < n; i++)
        if (!v[i] || !(c[i] = strdup(v[i])))
            *ok = false;
    if (!c)
        *ok = false;
    return c;
}

int xds_add_proxy(struct xds *x, const char *id, const char *token, const struct ca_names *names)
{
    if (!id || !*id || strchr(id, '/') || !token || !*token || !names || !names->spiffe_id)
        return -EINVAL;
    struct xds_proxy *p = calloc(1, sizeof *p);
    if (!p)
        return -ENOMEM;
    bool ok = (p->id = strdup(id)) && (p->spiffe_id = strdup(names->spiffe_id));
    p->dns = copy_strings(names->dns, names->ndns, &ok);
    p->ndns = p->dns ? names->ndns : 0;
    p->ips = copy_strings(names->ips, names->nips, &ok);
    p->nips = p->ips ? names->nips : 0;
    p->ttl_s = names->ttl_s;
    token_hash(str_from_cstr(token), p->token_hash);
    if (!ok) {
        proxy_free(p);
        return -ENOMEM;
    }
    /* Replacing keeps the config (a new token or names for the same proxy). */
    struct xds_proxy *old = find(x, str_from_cstr(id));
    if (old) {
        p->version = old->version;
        p->json = old->json;
        p->len = old->len;
        p->acked = old->acked;
        old->version = old->json = old->acked = NULL;
        /* Polls in flight stay: they are answered with the next config. */
        p->polls = old->polls;
        p->npolls = old->npolls;
        if (p->polls)
            p->polls->pprev = &p->polls;
        for (struct xds_poll *q = p->polls; q; q = q->next)
            q->p = p;
        old->polls = NULL;
        xds_remove_proxy(x, id);
    }
    p->next = x->proxies;
    x->proxies = p;
    return 0;
}

void xds_remove_proxy(struct xds *x, const char *id)
{
    for (struct xds_proxy **pp = &x->proxies; *pp; pp = &(*pp)->next)
        if (!strcmp((*pp)->id, id)) {
            struct xds_proxy *p = *pp;
            *pp = p->next;
            proxy_free(p);
            return;
        }
}

int xds_set_config(struct xds *x, const char *id, const char *version, const char *json, size_t len)
{
    struct xds_proxy *p = find(x, str_from_cstr(id));
    if (!p)
        return -ENOENT;
    if (!version || strlen(version) > XDS_MAX_VERSION || (!json && len))
        return -EINVAL;
    bool changed = !p->version || strcmp(p->version, version) != 0;
    char *v = strdup(version), *j = malloc(len + 1);
    if (!v || !j) {
        free(v);
        free(j);
        return -ENOMEM;
    }
    if (len)
        memcpy(j, json, len);
    j[len] = '\0';
    free(p->version);
    free(p->json);
    p->version = v;
    p->json = j;
    p->len = len;
    if (changed)
        while (p->polls)
            poll_answer(p->polls, 200);
    return 0;
}

const char *xds_acked_version(const struct xds *x, const char *id)
{
    const struct xds_proxy *p = find(x, str_from_cstr(id));
    return p ? p->acked : NULL;
}

void xds_free(struct xds *x)
{
    if (!x)
        return;
    while (x->proxies) {
        struct xds_proxy *p = x->proxies;
        x->proxies = p->next;
        proxy_free(p);
    }
    free(x);
}

/* ---- requests ------------------------------------------------------------------ */

/* The proxy named by {id} whose bearer token matches, or NULL after
 * answering 404 / 401. */
static struct xds_proxy *authenticate(struct service_req *r, struct xds *x)
{
    struct xds_proxy *p = find(x, service_req_param(r, "id"));
    if (!p) {
        service_reply_error(r, 404, "proxy_not_found", "no proxy with this id is registered");
        return NULL;
    }
    struct str auth = service_req_header(r, "Authorization");
    struct str token = STR_NULL;
    if (auth.n > 7 && str_eq_nocase(str_make(auth.p, 7), STR_LIT("Bearer ")))
        token = str_trim_ows(str_make(auth.p + 7, auth.n - 7));
    unsigned char h[32];
    token_hash(token, h);
    if (!token.n || CRYPTO_memcmp(h, p->token_hash, sizeof h) != 0) {
        service_req_add_header(r, "WWW-Authenticate", "Bearer");
        service_reply_error(r, 401, "unauthenticated",
                            token.n ? "the bearer token is not this proxy's" : "Authorization: Bearer TOKEN is required");
        return NULL;
    }
    return p;
}


static void get_config(struct service_req *r, void *arg)
{
    struct xds *x = arg;
    struct xds_proxy *p = authenticate(r, x);
    if (!p)
        return;
    struct str q = service_req_request(r)->query;
    char version[XDS_MAX_VERSION + 1], wait[16];
    int has_version = str_query_get(q, "version", version, sizeof version);
    int has_wait = str_query_get(q, "wait", wait, sizeof wait);
    uint64_t wait_s = XDS_DEFAULT_WAIT_S;
    if (has_version < 0 || has_wait < 0 ||
        (has_wait && (str_to_u64(str_from_cstr(wait), &wait_s) < 0 || wait_s > XDS_MAX_WAIT_S))) {
        service_reply_error(r, 400, "invalid_query",
                            has_version < 0 ? "version: malformed or longer than 256 bytes"
                                            : "wait: expected whole seconds, 0..300");
        return;
    }
    if (has_version && version[0] && p->version && !strcmp(version, p->version)) {
        char *acked = p->acked && !strcmp(p->acked, version) ? p->acked : strdup(version);
        if (acked && acked != p->acked) {
            free(p->acked);
            p->acked = acked;
        }
    }
    if (p->version && (!has_version || strcmp(version, p->version) != 0)) {
        reply_config(r, p);
        return;
    }
    if (wait_s == 0) {
        service_reply(r, 304, NULL, STR_NULL);
        return;
    }
    if (p->npolls >= XDS_MAX_POLLS_PER_PROXY) {
        service_reply_error(r, 429, "too_many_polls", "this proxy already has 8 long-polls waiting");
        return;
    }
    struct xds_poll *qp = calloc(1, sizeof *qp);
    if (!qp) {
        service_reply_error(r, 503, "out_of_memory", "out of memory");
        return;
    }
    qp->p = p;
    qp->r = r;
    loop_timer_init(service_req_loop(r), &qp->timer, poll_timeout, qp);
    if (loop_timer_start(&qp->timer, wait_s * 1000) < 0) {
        free(qp);
        service_reply_error(r, 503, "out_of_memory", "out of memory");
        return;
    }
    qp->next = p->polls;
    qp->pprev = &p->polls;
    if (p->polls)
        p->polls->pprev = &qp->next;
    p->polls = qp;
    p->npolls++;
    service_req_on_abort(r, poll_abort, qp);
}

/* The certificate's notAfter as Unix seconds, or 0. */
static int64_t not_after(const char *pem)
{
    BIO *b = BIO_new_mem_buf(pem, -1);
    X509 *c = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    struct tm tm;
    int64_t t = c && ASN1_TIME_to_tm(X509_get0_notAfter(c), &tm) == 1 ? (int64_t)timegm(&tm) : 0;
    X509_free(c);
    return t;
}

static void post_certificate(struct service_req *r, void *arg)
{
    struct xds *x = arg;
    struct xds_proxy *p = authenticate(r, x);
    if (!p)
        return;
    struct ca_names names = { .spiffe_id = p->spiffe_id, .dns = (const char *const *)p->dns, .ndns = p->ndns,
                              .ips = (const char *const *)p->ips, .nips = p->nips,
                              .ttl_s = p->ttl_s ? p->ttl_s : x->cert_ttl_s };
    struct str body = service_req_body(r);
    char *pem = NULL, err[512];
    if (ca_sign_csr(x->ca, body.p, body.n, &names, &pem, err, sizeof err) < 0) {
        service_reply_error(r, 400, "invalid_csr", err);
        return;
    }
    json_t *o = json_pack("{s:s, s:s, s:I}", "certificate", pem, "ca", ca_bundle_pem(x->ca), "not_after",
                          (json_int_t)not_after(pem));
    free(pem);
    if (!o) {
        service_reply_error(r, 503, "out_of_memory", "out of memory");
        return;
    }
    log_info("certificate issued", LOG_STR("proxy", p->id), LOG_STR("spiffe_id", p->spiffe_id));
    service_reply_json(r, 200, o);
}

int xds_register(struct xds *x, struct service *s)
{
    int rc = service_route(s, "GET", "/v1/proxies/{id}/config", get_config, x);
    if (rc == 0)
        rc = service_route(s, "POST", "/v1/proxies/{id}/certificate", post_certificate, x);
    return rc;
}
