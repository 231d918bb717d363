/* jwks_cache.c — a service's copy of its issuer's JWKS, on one loop.
 *
 * State: the current key set (refcounted, swapped whole on each successful
 * fetch), at most one fetch in flight, a timer for the next periodic fetch
 * (or the retry after a failure), and a list of pending verifications.
 * A verification whose kid is known is done at once and its result waits
 * in the list for a deferred callback (the API promises that callbacks
 * never run inside jwks_cache_verify). One whose kid is unknown waits for
 * the fetch in flight, or starts one if the last kid-triggered fetch is
 * older than min_refetch; otherwise it fails at once with UNKNOWN_KID. */
#include "core/jwt.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/http1_client.h"
#include "core/log.h"
#include "core/loop.h"
#include "core/net.h"

/* 1024 waiting verifications: each holds a token copy (≤ 8 KiB by default),
 * so the worst case is ~8 MiB per loop; past it we answer 503 at once. */
#define MAX_PENDING 1024
#define FIRST_RETRY_MS 1000

enum pending_state { PENDING_WAIT_FETCH, PENDING_READY };

struct pending {
    struct pending *next, *prev;
    enum pending_state state;
    jwks_verify_cb cb;
    void *arg;
    struct jwt_verify_opts opts;
    int rc;
    struct jwt_claims claims;
    struct jwt_error err;
    size_t token_len;
    char token[];
};

struct jwks_cache {
    struct loop *loop;
    struct http1_client *client;
    char *url;
    struct http1_url u; /* views into url */
    struct net_addr addr; /* the issuer, or the proxy */
    struct str target;  /* the url's path, or through a proxy the whole url (absolute form) */
    char host[300];     /* Host header: host[:port] */
    struct jwks *keys;
    uint64_t refresh_ms, min_refetch_ms, retry_ms;
    uint64_t last_kid_fetch_ms; /* 0: never */
    bool has_kid_fetched;
    struct http1_client_call *call; /* fetch in flight */
    struct loop_timer timer;
    struct loop_defer deliver;
    struct pending *head, *tail;
    size_t npending;
    struct jwks_cache_stats stats;
};

static void start_fetch(struct jwks_cache *c);

static void list_remove(struct jwks_cache *c, struct pending *p)
{
    if (p->prev)
        p->prev->next = p->next;
    else
        c->head = p->next;
    if (p->next)
        p->next->prev = p->prev;
    else
        c->tail = p->prev;
    p->next = p->prev = NULL;
    c->npending--;
}

static void pending_free(struct pending *p)
{
    jwt_claims_free(&p->claims);
    free(p);
}

/* Runs the callbacks of ready entries, one at a time: each is unlinked
 * before its callback so that the callback may cancel or add others. Only
 * entries ready when this round began run now; later ones next round. */
static void deliver_ready(void *arg)
{
    struct jwks_cache *c = arg;
    size_t budget = c->npending;
    while (budget--) {
        struct pending *p = c->head;
        while (p && p->state != PENDING_READY)
            p = p->next;
        if (!p)
            return;
        list_remove(c, p);
        if (p->rc == 0)
            c->stats.verified++;
        else
            c->stats.rejected++;
        p->cb(p->rc, p->rc == 0 ? &p->claims : NULL, p->rc == 0 ? NULL : &p->err, p->arg);
        pending_free(p);
    }
    for (struct pending *p = c->head; p; p = p->next)
        if (p->state == PENDING_READY) {
            loop_defer(c->loop, &c->deliver, deliver_ready, c);
            return;
        }
}

static void resolve(struct jwks_cache *c, struct pending *p)
{
    if (!c->keys) {
        p->rc = -EINVAL;
        p->err.reason = JWT_E_KEYS_UNAVAILABLE;
        snprintf(p->err.message, sizeof p->err.message, "signing keys are not available");
    } else {
        p->rc = jwt_verify(str_make(p->token, p->token_len), c->keys, &p->opts, &p->claims, &p->err);
    }
    p->state = PENDING_READY;
    loop_defer(c->loop, &c->deliver, deliver_ready, c);
}

static void arm_timer(struct jwks_cache *c, uint64_t ms)
{
    if (loop_timer_start(&c->timer, ms) < 0)
        log_error("cannot arm the JWKS refresh timer");
}

static void on_fetched(int err, const struct http1_client_response *resp, void *arg)
{
    struct jwks_cache *c = arg;
    char why[160] = "";
    c->call = NULL;
    if (err < 0) {
        snprintf(why, sizeof why, "fetch failed: %s", strerror(-err));
    } else if (resp->status != 200) {
        snprintf(why, sizeof why, "fetch answered status %d", resp->status);
    } else {
        struct jwks *k = NULL;
        if (jwks_parse(resp->body, &k, why, sizeof why) == 0) {
            jwks_unref(c->keys);
            c->keys = k;
            c->retry_ms = FIRST_RETRY_MS;
            why[0] = '\0';
        }
    }
    if (why[0]) {
        c->stats.fetch_errors++;
        log_warn("JWKS fetch failed", LOG_STR("url", c->url), LOG_STR("reason", why),
                 LOG_UINT("retry_ms", c->retry_ms));
        arm_timer(c, c->retry_ms);
        c->retry_ms = c->retry_ms * 2 < c->refresh_ms ? c->retry_ms * 2 : c->refresh_ms;
    } else {
        arm_timer(c, c->refresh_ms);
    }
    /* Everyone who waited for this fetch gets an answer now, keys or not. */
    for (struct pending *p = c->head; p; p = p->next)
        if (p->state == PENDING_WAIT_FETCH)
            resolve(c, p);
}

static void start_fetch(struct jwks_cache *c)
{
    static const struct http1_header accept = { STR_LIT("Accept"), STR_LIT("application/json") };
    if (c->call)
        return;
    loop_timer_stop(&c->timer);
    struct http1_client_request req = {
        .addr = c->addr,
        .method = STR_LIT("GET"),
        .target = c->target,
        .host = str_from_cstr(c->host),
        .headers = &accept,
        .nheaders = 1,
        .timeout_ms = 5000, /* the issuer is local (mesh); 5 s means it is not answering */
    };
    c->stats.fetches++;
    if (http1_client_send(c->client, &req, on_fetched, c, &c->call) < 0) {
        c->call = NULL;
        c->stats.fetch_errors++;
        arm_timer(c, c->retry_ms);
        for (struct pending *p = c->head; p; p = p->next)
            if (p->state == PENDING_WAIT_FETCH)
                resolve(c, p);
    }
}

static void on_timer(struct loop_timer *t) { start_fetch(t->data); }

struct jwks_cache *jwks_cache_new(struct loop *l, struct http1_client *client, const char *url, unsigned refresh_s,
                                  unsigned min_refetch_s)
{
    return jwks_cache_new_via(l, client, url, NULL, refresh_s, min_refetch_s);
}

struct jwks_cache *jwks_cache_new_via(struct loop *l, struct http1_client *client, const char *url,
                                      const struct net_addr *proxy, unsigned refresh_s, unsigned min_refetch_s)
{
    struct jwks_cache *c = calloc(1, sizeof *c);
    if (!c || !(c->url = strdup(url)))
        goto fail;
    if (http1_url_parse(str_from_cstr(c->url), &c->u) < 0 || c->u.is_tls)
        goto fail;
    if (proxy) {
        /* RFC 9112 §3.2.2: the proxy routes on the authority of the target. */
        c->addr = *proxy;
        c->target = str_from_cstr(c->url);
        int n = c->u.port == 80 ? snprintf(c->host, sizeof c->host, "%.*s", STR_FMT(c->u.host))
                                : snprintf(c->host, sizeof c->host, "%.*s:%u", STR_FMT(c->u.host), c->u.port);
        if (n < 0 || (size_t)n >= sizeof c->host)
            goto fail;
    } else {
        if (net_addr_from_host(c->u.host, c->u.port, &c->addr) < 0)
            goto fail;
        c->target = c->u.path;
        net_addr_format(&c->addr, c->host, sizeof c->host);
    }
    c->loop = l;
    c->client = client;
    c->refresh_ms = (refresh_s ? refresh_s : 300) * 1000ull;
    c->min_refetch_ms = (min_refetch_s ? min_refetch_s : 30) * 1000ull;
    c->retry_ms = FIRST_RETRY_MS < c->refresh_ms ? FIRST_RETRY_MS : c->refresh_ms;
    loop_timer_init(l, &c->timer, on_timer, c);
    start_fetch(c);
    return c;
fail:
    if (c)
        free(c->url);
    free(c);
    return NULL;
}

void jwks_cache_free(struct jwks_cache *c)
{
    if (!c)
        return;
    if (c->call)
        http1_client_cancel(c->call);
    loop_timer_stop(&c->timer);
    loop_defer_cancel(c->loop, &c->deliver);
    while (c->head) {
        struct pending *p = c->head;
        list_remove(c, p);
        pending_free(p);
    }
    jwks_unref(c->keys);
    free(c->url);
    free(c);
}

int jwks_cache_verify(struct jwks_cache *c, struct str token, const struct jwt_verify_opts *o, jwks_verify_cb cb,
                      void *arg)
{
    static const struct jwt_verify_opts defaults;
    if (!o)
        o = &defaults;
    if (c->npending >= MAX_PENDING)
        return -EBUSY;
    /* Anything longer is refused by jwt_verify without looking at it: copy
     * only what it needs to say so. */
    size_t max = o->max_token_bytes ? o->max_token_bytes : JWT_DEFAULT_MAX_TOKEN_BYTES;
    size_t copy = token.n > max ? max + 1 : token.n;
    struct pending *p = calloc(1, sizeof *p + copy + 1);
    if (!p)
        return -ENOMEM;
    if (copy)
        memcpy(p->token, token.p, copy);
    p->cb = cb;
    p->arg = arg;
    p->opts = *o;
    p->token_len = copy;

    p->prev = c->tail;
    if (c->tail)
        c->tail->next = p;
    else
        c->head = p;
    c->tail = p;
    c->npending++;

    char kid[JWT_MAX_KID_BYTES + 1];
    bool needs_keys = token.n <= max && jwt_peek_kid(str_make(p->token, copy), kid, sizeof kid) == 0 &&
                      !jwks_has_kid(c->keys, kid);
    if (!needs_keys) {
        resolve(c, p); /* known kid, or a token jwt_verify refuses without keys */
        return 0;
    }
    p->state = PENDING_WAIT_FETCH;
    if (c->call)
        return 0; /* the fetch in flight may bring the kid */
    uint64_t now = loop_now_ms(c->loop);
    if (!c->has_kid_fetched || now - c->last_kid_fetch_ms >= c->min_refetch_ms) {
        c->has_kid_fetched = true;
        c->last_kid_fetch_ms = now;
        start_fetch(c);
        return 0;
    }
    c->stats.refetch_limited++;
    resolve(c, p);
    return 0;
}

void jwks_cache_cancel(struct jwks_cache *c, jwks_verify_cb cb, void *arg)
{
    struct pending *p = c->head;
    while (p) {
        struct pending *next = p->next;
        if (p->cb == cb && p->arg == arg) {
            list_remove(c, p);
            pending_free(p);
        }
        p = next;
    }
}

bool jwks_cache_is_ready(const struct jwks_cache *c) { return c->keys != NULL; }

struct jwks *jwks_cache_keys(const struct jwks_cache *c) { return jwks_ref(c->keys); }

const struct jwks_cache_stats *jwks_cache_stats(const struct jwks_cache *c) { return &c->stats; }
