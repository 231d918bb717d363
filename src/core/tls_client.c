/* tls_client.c — client ctx: server verification by hostname or SPIFFE ID,
 * client certificates, ALPN offer, and the last session per upstream. */
#include "core/tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "core/tls_internal.h"

/* A proxy talks to tens to hundreds of upstreams; the cache is searched
 * linearly under a lock once per new connection (not per request), which
 * at 256 entries costs about a microsecond. */
enum { DEFAULT_CLIENT_CACHE = 256 };

struct cache_entry {
    char *key;
    SSL_SESSION *sess;
    uint64_t used; /* tick of the last get or put: the oldest is evicted */
};

struct tls_client_ctx {
    atomic_uint refs;
    SSL_CTX *ctx;
    pthread_mutex_t mu; /* guards the cache */
    struct cache_entry *entries;
    size_t n, cap;
    uint64_t tick;
};

/* ---- session cache ----------------------------------------------------- */

static struct cache_entry *cache_find(struct tls_client_ctx *c, const char *key)
{
    for (size_t i = 0; i < c->n; i++)
        if (strcmp(c->entries[i].key, key) == 0)
            return &c->entries[i];
    return NULL;
}

static void cache_drop(struct tls_client_ctx *c, struct cache_entry *e)
{
    free(e->key);
    SSL_SESSION_free(e->sess);
    *e = c->entries[--c->n];
}

/* A new reference to the session cached for key, or NULL. */
static SSL_SESSION *cache_get(struct tls_client_ctx *c, const char *key)
{
    SSL_SESSION *s = NULL;

    pthread_mutex_lock(&c->mu);
    struct cache_entry *e = cache_find(c, key);
    if (e) {
        /* Expired sessions would only be refused by the server. */
        long born = SSL_SESSION_get_time(e->sess), ttl = SSL_SESSION_get_timeout(e->sess);
        if ((long)time(NULL) - born >= ttl || !SSL_SESSION_is_resumable(e->sess)) {
            cache_drop(c, e);
        } else {
            s = e->sess;
            SSL_SESSION_up_ref(s);
            e->used = ++c->tick;
        }
    }
    pthread_mutex_unlock(&c->mu);
    return s;
}

/* Takes over the reference on sess. Returns false if it could not. */
static bool cache_put(struct tls_client_ctx *c, const char *key, SSL_SESSION *sess)
{
    bool kept = true;

    pthread_mutex_lock(&c->mu);
    struct cache_entry *e = cache_find(c, key);
    if (e) {
        SSL_SESSION_free(e->sess);
        e->sess = sess;
        e->used = ++c->tick;
        goto out;
    }
    char *k = strdup(key);
    if (!k) {
        kept = false;
        goto out;
    }
    if (c->n == c->cap) {
        struct cache_entry *oldest = &c->entries[0];
        for (size_t i = 1; i < c->n; i++)
            if (c->entries[i].used < oldest->used)
                oldest = &c->entries[i];
        cache_drop(c, oldest);
    }
    c->entries[c->n++] = (struct cache_entry){ k, sess, ++c->tick };
out:
    pthread_mutex_unlock(&c->mu);
    return kept;
}

/* OpenSSL hands over each new session (TLS 1.3: each ticket, after the
 * handshake, while reading). Returning 1 keeps its reference. */
static int new_session_cb(SSL *ssl, SSL_SESSION *sess)
{
    struct tls_conn *conn = tls_conn_of(ssl);
    if (!conn || !conn->cctx || !conn->session_key || !SSL_SESSION_is_resumable(sess))
        return 0;
    return cache_put(conn->cctx, conn->session_key, sess) ? 1 : 0;
}

size_t tls_client_session_count(struct tls_client_ctx *c)
{
    pthread_mutex_lock(&c->mu);
    size_t n = c->n;
    pthread_mutex_unlock(&c->mu);
    return n;
}

/* ---- verification ------------------------------------------------------ */

/* Chain and hostname checks are OpenSSL's; this adds the SPIFFE ID check
 * on the leaf, failing the handshake with a bad_certificate alert. */
static int verify_cb(int ok, X509_STORE_CTX *xs)
{
    if (!ok || X509_STORE_CTX_get_error_depth(xs) != 0)
        return ok;
    SSL *ssl = X509_STORE_CTX_get_ex_data(xs, SSL_get_ex_data_X509_STORE_CTX_idx());
    struct tls_conn *c = ssl ? tls_conn_of(ssl) : NULL;
    if (!c || !c->expected_spiffe)
        return 1;
    char got[256], msg[600];
    int rc = tls_cert_spiffe_id(X509_STORE_CTX_get_current_cert(xs), got, sizeof got);
    if (rc == 0 && strcmp(got, c->expected_spiffe) == 0)
        return 1;
    snprintf(msg, sizeof msg, "TLS handshake failed: the server's SPIFFE ID is %s%s%s, expected %s",
             rc ? "" : "\"", rc ? "missing" : got, rc ? "" : "\"", c->expected_spiffe);
    tls_conn_set_error(c, msg);
    X509_STORE_CTX_set_error(xs, X509_V_ERR_APPLICATION_VERIFICATION);
    return 0;
}

/* ---- the ctx ----------------------------------------------------------- */

static void cctx_free(struct tls_client_ctx *c)
{
    for (size_t i = 0; i < c->n; i++) {
        free(c->entries[i].key);
        SSL_SESSION_free(c->entries[i].sess);
    }
    free(c->entries);
    SSL_CTX_free(c->ctx);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

void tls_client_ctx_ref(struct tls_client_ctx *c)
{
    atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
}

void tls_client_ctx_unref(struct tls_client_ctx *c)
{
    if (c && atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) == 1)
        cctx_free(c);
}

struct tls_client_ctx *tls_client_ctx_new(const struct tls_client_config *cfg, struct tls_error *err)
{
    struct tls_client_ctx *c = NULL;
    unsigned char *alpn = NULL;
    size_t alpn_len = 0;
    int rc;

    ERR_clear_error();
    if (tls_conn_index() < 0) {
        tls_error_set(err, "OpenSSL ex_data indexes exhausted");
        return NULL;
    }
    if (!cfg->cert_file != !cfg->key_file) {
        tls_error_set(err, "tls client: cert_file and key_file go together");
        return NULL;
    }
    if (!(c = calloc(1, sizeof *c)))
        goto nomem;
    atomic_init(&c->refs, 1);
    pthread_mutex_init(&c->mu, NULL);
    c->cap = cfg->disable_session_reuse ? 0 : cfg->session_cache_size ? cfg->session_cache_size : DEFAULT_CLIENT_CACHE;
    if (c->cap && !(c->entries = calloc(c->cap, sizeof *c->entries)))
        goto nomem;
    if (!(c->ctx = SSL_CTX_new(TLS_client_method())))
        goto nomem;
    if (tls_ctx_setup(c->ctx, cfg->min_version, cfg->max_version, cfg->ciphers, cfg->ciphersuites, err))
        goto fail;
    if (cfg->ca_file) {
        if (access(cfg->ca_file, R_OK) != 0) {
            tls_error_set(err, "ca_file %s: %s", cfg->ca_file, strerror(errno));
            goto fail;
        }
        if (SSL_CTX_load_verify_file(c->ctx, cfg->ca_file) != 1) {
            tls_error_set(err, "ca_file %s: no usable PEM CA certificate", cfg->ca_file);
            goto fail;
        }
    } else if (SSL_CTX_set_default_verify_paths(c->ctx) != 1) {
        tls_error_set(err, "the system CA store cannot be loaded");
        goto fail;
    }
    SSL_CTX_set_verify(c->ctx, SSL_VERIFY_PEER, verify_cb);
    if (cfg->cert_file) {
        struct tls_cert_pair p = { cfg->cert_file, cfg->key_file, cfg->chain_file };
        if (tls_ctx_load_pair(c->ctx, &p, "client", err))
            goto fail;
    }
    if ((rc = tls_alpn_wire(cfg->alpn ? cfg->alpn : "http/1.1", "alpn", &alpn, &alpn_len, err))) {
        if (rc == -ENOMEM)
            goto nomem;
        goto fail;
    }
    if (alpn && SSL_CTX_set_alpn_protos(c->ctx, alpn, (unsigned)alpn_len) != 0) /* 0 is success here */
        goto nomem;
    free(alpn);
    alpn = NULL;
    if (c->cap) {
        /* No internal store: the per-upstream cache below is the store. */
        SSL_CTX_set_session_cache_mode(c->ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
        SSL_CTX_sess_set_new_cb(c->ctx, new_session_cb);
    } else {
        SSL_CTX_set_session_cache_mode(c->ctx, SSL_SESS_CACHE_OFF);
    }
    ERR_clear_error();
    return c;
nomem:
    tls_error_set(err, "tls client ctx: out of memory");
fail:
    free(alpn);
    if (c)
        cctx_free(c);
    return NULL;
}

/* ---- connections ------------------------------------------------------- */

static bool is_ip_literal(const char *s)
{
    unsigned char buf[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1;
}

int tls_sock_client(struct tls_client_ctx *c, struct sock *s, const char *sni,
                    const struct tls_client_conn_opts *opts)
{
    const char *spiffe = opts ? opts->expected_spiffe_id : NULL;
    const char *upstream = opts && opts->session_key ? opts->session_key : sni ? sni : "";
    SSL *ssl = NULL;
    struct tls_conn *conn = NULL;
    int rc = -ENOMEM;

    if (tls_sock_is_tls(s) || s->fd < 0 || (!sni && !spiffe))
        return -EINVAL;
    if (spiffe && strncasecmp(spiffe, "spiffe://", 9) != 0)
        return -EINVAL;
    if (sni && (!*sni || strlen(sni) > 253))
        return -EINVAL;
    bool is_ip = sni && is_ip_literal(sni);
    if (!(ssl = SSL_new(c->ctx)) || !(conn = calloc(1, sizeof *conn)))
        goto fail;
    SSL_set_connect_state(ssl);
    /* RFC 6066 §3: no IP literals in SNI. */
    if (sni && !is_ip && !SSL_set_tlsext_host_name(ssl, sni))
        goto fail;
    if (spiffe) {
        if (!(conn->expected_spiffe = strdup(spiffe)))
            goto fail;
    } else if (is_ip) {
        if (!X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), sni))
            goto fail;
    } else {
        SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        if (!SSL_set1_host(ssl, sni))
            goto fail;
    }
    if (c->cap) {
        /* "upstream\nidentity": a session verified for one identity is
         * never offered where another is expected. */
        const char *id = spiffe ? spiffe : sni;
        size_t n = strlen(upstream) + 1 + strlen(id) + 1;
        if (!(conn->session_key = malloc(n)))
            goto fail;
        snprintf(conn->session_key, n, "%s\n%s", upstream, id);
        SSL_SESSION *sess = cache_get(c, conn->session_key);
        if (sess) {
            /* A copy: after resuming with a TLS 1.3 ticket OpenSSL marks the
             * session it used as spent, which would spoil the cached one
             * for every other connection to this upstream (in parallel or
             * when the server sends no fresh ticket). */
            SSL_SESSION *copy = SSL_SESSION_dup(sess);
            SSL_SESSION_free(sess);
            int ok = copy && SSL_set_session(ssl, copy);
            SSL_SESSION_free(copy);
            if (!ok)
                goto fail;
        }
    }
    if ((rc = tls_sock_attach(s, ssl, conn)))
        goto fail;
    tls_client_ctx_ref(c);
    conn->cctx = c;
    return 0;
fail:
    SSL_free(ssl);
    if (conn) {
        free(conn->expected_spiffe);
        free(conn->session_key);
        free(conn);
    }
    ERR_clear_error();
    return rc;
}
