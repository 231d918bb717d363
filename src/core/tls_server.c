/* tls_server.c — server ctx: certificates chosen by SNI, ALPN, client
 * certificates, session cache and rotating ticket keys; the holder that
 * swaps a ctx on reload.
 *
 * One SSL_CTX per certificate, all configured alike; the first is the
 * default and the "session ctx" (OpenSSL keeps the session cache and calls
 * the ticket-key callback on the ctx an SSL was created from, even after
 * the SNI callback moved it to another cert's ctx with SSL_set_SSL_CTX).
 * This is how NGINX and HAProxy serve many certificates. */
#include "core/tls.h"

#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "core/tls_internal.h"

enum {
    TICKET_KEYS = 3,                 /* current + two previous */
    DEFAULT_SESSION_TIMEOUT_S = 3600,
    DEFAULT_SESSION_CACHE = 20480,   /* NGINX's 1 MiB shared cache holds ~4000; ours is per ctx */
    DEFAULT_TICKET_ROTATE_S = 3600,
    /* A chain deeper than root → intermediate → intermediate → leaf is a
     * misconfiguration or an attack on the verifier. */
    CLIENT_VERIFY_DEPTH = 4,
};

struct ticket_key {
    unsigned char name[16];
    unsigned char aes[32];  /* AES-256-CBC, as OpenSSL's own ticket format */
    unsigned char hmac[32]; /* HMAC-SHA256 */
    uint64_t created_ms;
};

struct sni_name {
    char *name;    /* lowercase; "*.example.test" for a wildcard */
    size_t cert;   /* index into ctxs */
    bool is_wildcard;
};

struct tls_server_ctx {
    atomic_uint refs;
    SSL_CTX **ctxs; /* one per certificate; ctxs[0] is the default */
    size_t nctx;
    struct sni_name *names;
    size_t nnames;
    unsigned char *alpn; /* wire format, server preference order */
    size_t alpn_len;
    bool alpn_strict;
    /* Ticket keys, shared by every thread that accepts on this ctx. The
     * lock is held to copy 80 bytes, once per ticket issued or opened. */
    pthread_mutex_t keys_mu;
    struct ticket_key keys[TICKET_KEYS];
    unsigned nkeys;
    uint64_t rotate_ms;
};

struct tls_server_holder {
    pthread_mutex_t mu;
    struct tls_server_ctx *cur;
};

static int sctx_index = -1;
static pthread_once_t sctx_index_once = PTHREAD_ONCE_INIT;

static void sctx_index_init(void)
{
    sctx_index = SSL_CTX_get_ex_new_index(0, "strata tls_server_ctx", NULL, NULL, NULL);
}

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- ticket keys ------------------------------------------------------- */

static int rotate_locked(struct tls_server_ctx *c, uint64_t now)
{
    struct ticket_key k;
    if (RAND_bytes(k.name, sizeof k.name) != 1 || RAND_bytes(k.aes, sizeof k.aes) != 1 ||
        RAND_bytes(k.hmac, sizeof k.hmac) != 1) {
        OPENSSL_cleanse(&k, sizeof k);
        ERR_clear_error();
        return -EIO;
    }
    k.created_ms = now;
    OPENSSL_cleanse(&c->keys[TICKET_KEYS - 1], sizeof c->keys[0]);
    memmove(&c->keys[1], &c->keys[0], sizeof c->keys[0] * (TICKET_KEYS - 1));
    c->keys[0] = k;
    OPENSSL_cleanse(&k, sizeof k);
    if (c->nkeys < TICKET_KEYS)
        c->nkeys++;
    return 0;
}

int tls_server_rotate_ticket_keys(struct tls_server_ctx *c)
{
    pthread_mutex_lock(&c->keys_mu);
    int rc = rotate_locked(c, mono_ms());
    pthread_mutex_unlock(&c->keys_mu);
    return rc;
}

static int ticket_key_params(EVP_MAC_CTX *hctx, const struct ticket_key *k)
{
    char digest[] = "SHA256";
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, (void *)k->hmac, sizeof k->hmac),
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
        OSSL_PARAM_construct_end(),
    };
    return EVP_MAC_CTX_set_params(hctx, params) == 1 ? 0 : -1;
}

/* OpenSSL's ticket-key callback: 1 ok, 2 ok but issue a fresh ticket (the
 * key is no longer current), 0 unknown key (full handshake), -1 error. */
static int ticket_key_cb(SSL *ssl, unsigned char key_name[16], unsigned char *iv, EVP_CIPHER_CTX *cctx,
                         EVP_MAC_CTX *hctx, int enc)
{
    struct tls_server_ctx *c = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), sctx_index);
    struct ticket_key k;
    int rc = 0;

    if (!c)
        return -1;
    pthread_mutex_lock(&c->keys_mu);
    if (enc) {
        uint64_t now = mono_ms();
        if (c->nkeys == 0 || now - c->keys[0].created_ms >= c->rotate_ms)
            rotate_locked(c, now); /* on failure keep the old key a while longer */
        rc = c->nkeys ? 1 : -1;
        if (c->nkeys)
            k = c->keys[0];
    } else {
        /* TLS 1.3: always a fresh ticket. OpenSSL clients (curl among
         * them) use a 1.3 ticket once and drop it; without a new one they
         * would resume only every other connection. */
        bool renew = SSL_version(ssl) >= TLS1_3_VERSION;
        for (unsigned i = 0; i < c->nkeys; i++)
            if (memcmp(c->keys[i].name, key_name, 16) == 0) {
                k = c->keys[i];
                rc = i == 0 && !renew ? 1 : 2;
                break;
            }
    }
    pthread_mutex_unlock(&c->keys_mu);
    if (rc <= 0)
        return rc;
    if (enc) {
        memcpy(key_name, k.name, 16);
        if (RAND_bytes(iv, 16) != 1 || EVP_EncryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k.aes, iv) != 1)
            rc = -1;
    } else if (EVP_DecryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k.aes, iv) != 1) {
        rc = -1;
    }
    if (rc > 0 && ticket_key_params(hctx, &k) != 0)
        rc = -1;
    OPENSSL_cleanse(&k, sizeof k);
    return rc;
}

/* ---- SNI --------------------------------------------------------------- */

static int add_name(struct tls_server_ctx *c, const char *p, size_t n, size_t cert)
{
    if (n == 0 || n > 253 || memchr(p, '\0', n))
        return 0; /* not a host name: never matches an SNI, ignore */
    for (size_t i = 0; i < c->nnames; i++)
        if (strlen(c->names[i].name) == n && strncasecmp(c->names[i].name, p, n) == 0)
            return 0; /* an earlier certificate already serves it */
    struct sni_name *nn = realloc(c->names, (c->nnames + 1) * sizeof *nn);
    if (!nn)
        return -ENOMEM;
    c->names = nn;
    char *s = malloc(n + 1);
    if (!s)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++)
        s[i] = (char)tolower((unsigned char)p[i]);
    s[n] = '\0';
    nn[c->nnames++] = (struct sni_name){ s, cert, n > 2 && s[0] == '*' && s[1] == '.' };
    return 0;
}

/* The DNS names of a certificate: its DNS SANs, or its CN when it has none
 * (RFC 6125 clients ignore the CN when SANs exist; so do we). */
static int collect_names(struct tls_server_ctx *c, X509 *x, size_t cert)
{
    GENERAL_NAMES *sans = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    int rc = 0, ndns = 0;

    for (int i = 0; sans && i < sk_GENERAL_NAME_num(sans) && rc == 0; i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, i);
        if (g->type != GEN_DNS)
            continue;
        ndns++;
        rc = add_name(c, (const char *)ASN1_STRING_get0_data(g->d.dNSName),
                      (size_t)ASN1_STRING_length(g->d.dNSName), cert);
    }
    GENERAL_NAMES_free(sans);
    if (rc || ndns)
        return rc;
    X509_NAME *subj = X509_get_subject_name(x);
    int idx = X509_NAME_get_index_by_NID(subj, NID_commonName, -1);
    if (idx < 0)
        return 0;
    ASN1_STRING *cn = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subj, idx));
    return add_name(c, (const char *)ASN1_STRING_get0_data(cn), (size_t)ASN1_STRING_length(cn), cert);
}

/* Exact names first, then a wildcard for the first label. Linear: a
 * handshake costs ~1 ms of CPU, 1000 names compared cost ~10 µs. */
static size_t lookup_cert(const struct tls_server_ctx *c, const char *sni)
{
    size_t n = strlen(sni);
    if (n && sni[n - 1] == '.')
        n--; /* "example.test." is "example.test" */
    for (size_t i = 0; i < c->nnames; i++)
        if (!c->names[i].is_wildcard && strlen(c->names[i].name) == n && strncasecmp(c->names[i].name, sni, n) == 0)
            return c->names[i].cert;
    const char *dot = memchr(sni, '.', n);
    if (!dot || dot == sni)
        return 0;
    size_t rest = n - (size_t)(dot - sni); /* ".example.test" */
    for (size_t i = 0; i < c->nnames; i++)
        if (c->names[i].is_wildcard && strlen(c->names[i].name) - 1 == rest &&
            strncasecmp(c->names[i].name + 1, dot, rest) == 0)
            return c->names[i].cert;
    return 0;
}

static int sni_cb(SSL *ssl, int *alert, void *arg)
{
    struct tls_server_ctx *c = arg;
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    (void)alert;
    if (!name)
        return SSL_TLSEXT_ERR_NOACK;
    size_t i = lookup_cert(c, name);
    if (i != 0 && SSL_set_SSL_CTX(ssl, c->ctxs[i]) == NULL)
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    return SSL_TLSEXT_ERR_OK;
}

/* ---- ALPN -------------------------------------------------------------- */

static int alpn_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
                   unsigned int inlen, void *arg)
{
    const struct tls_server_ctx *c = arg;
    (void)ssl;
    for (size_t i = 0; i < c->alpn_len; i += 1 + c->alpn[i]) {
        unsigned char k = c->alpn[i];
        for (unsigned j = 0; j < inlen && j + 1u + in[j] <= inlen; j += 1u + in[j])
            if (in[j] == k && memcmp(in + j + 1, c->alpn + i + 1, k) == 0) {
                *out = in + j + 1;
                *outlen = k;
                return SSL_TLSEXT_ERR_OK;
            }
    }
    /* Nothing in common (a client offering only "h2"): go on without ALPN
     * and let HTTP/1.1 answer, unless told to be strict (RFC 7301 §3.2). */
    return c->alpn_strict ? SSL_TLSEXT_ERR_ALERT_FATAL : SSL_TLSEXT_ERR_NOACK;
}

/* ---- the ctx ----------------------------------------------------------- */

static void sctx_free(struct tls_server_ctx *c)
{
    for (size_t i = 0; i < c->nctx; i++)
        SSL_CTX_free(c->ctxs[i]);
    free(c->ctxs);
    for (size_t i = 0; i < c->nnames; i++)
        free(c->names[i].name);
    free(c->names);
    free(c->alpn);
    OPENSSL_cleanse(c->keys, sizeof c->keys);
    pthread_mutex_destroy(&c->keys_mu);
    free(c);
}

void tls_server_ctx_ref(struct tls_server_ctx *c)
{
    atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
}

void tls_server_ctx_unref(struct tls_server_ctx *c)
{
    if (c && atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) == 1)
        sctx_free(c);
}

/* Everything one certificate's SSL_CTX needs besides the certificate. */
static int setup_one(struct tls_server_ctx *c, SSL_CTX *ctx, const struct tls_server_config *cfg,
                     X509_STORE *trust, const unsigned char *sid, struct tls_error *err)
{
    int rc = tls_ctx_setup(ctx, cfg->min_version, cfg->max_version, cfg->ciphers, cfg->ciphersuites, err);
    if (rc)
        return rc;
    SSL_CTX_set_ex_data(ctx, sctx_index, c);
    SSL_CTX_set_tlsext_servername_callback(ctx, sni_cb);
    SSL_CTX_set_tlsext_servername_arg(ctx, c);
    if (c->alpn)
        SSL_CTX_set_alpn_select_cb(ctx, alpn_cb, c);
    /* The same context everywhere: a session is resumable whichever cert's
     * ctx SNI moved it to; a random one per ctx: never across reloads. */
    SSL_CTX_set_session_id_context(ctx, sid, SSL_MAX_SID_CTX_LENGTH);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
    SSL_CTX_sess_set_cache_size(ctx, (long)(cfg->session_cache_size ? cfg->session_cache_size : DEFAULT_SESSION_CACHE));
    SSL_CTX_set_timeout(ctx, (long)(cfg->session_timeout_s ? cfg->session_timeout_s : DEFAULT_SESSION_TIMEOUT_S));
    if (cfg->disable_tickets)
        SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    else
        SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticket_key_cb);
    if (cfg->client_auth != TLS_CLIENT_AUTH_NONE) {
        SSL_CTX_set1_cert_store(ctx, trust);
        /* Tell clients which CAs we accept, so that one with several
         * certificates picks the right one. */
        STACK_OF(X509_NAME) *cas = SSL_load_client_CA_file(cfg->client_ca_file);
        if (!cas) {
            tls_error_set(err, "client_ca_file %s: no CA certificate names", cfg->client_ca_file);
            return -EINVAL;
        }
        SSL_CTX_set_client_CA_list(ctx, cas);
        int mode = SSL_VERIFY_PEER;
        if (cfg->client_auth == TLS_CLIENT_AUTH_REQUIRED)
            mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
        SSL_CTX_set_verify(ctx, mode, NULL);
        SSL_CTX_set_verify_depth(ctx, CLIENT_VERIFY_DEPTH);
    }
    return 0;
}

struct tls_server_ctx *tls_server_ctx_new(const struct tls_server_config *cfg, struct tls_error *err)
{
    struct tls_server_ctx *c = NULL;
    X509_STORE *trust = NULL;
    unsigned char sid[SSL_MAX_SID_CTX_LENGTH];
    int rc = -EINVAL;

    ERR_clear_error();
    pthread_once(&sctx_index_once, sctx_index_init);
    if (sctx_index < 0 || tls_conn_index() < 0) {
        tls_error_set(err, "OpenSSL ex_data indexes exhausted");
        return NULL;
    }
    if (!cfg->certs || cfg->ncerts == 0) {
        tls_error_set(err, "tls server: at least one certificate is required");
        return NULL;
    }
    if (cfg->client_auth != TLS_CLIENT_AUTH_NONE && !cfg->client_ca_file) {
        tls_error_set(err, "client_auth needs client_ca_file (the trust bundle for client certificates)");
        return NULL;
    }
    if (!(c = calloc(1, sizeof *c))) {
        rc = -ENOMEM;
        goto out;
    }
    atomic_init(&c->refs, 1);
    pthread_mutex_init(&c->keys_mu, NULL);
    if (!(c->ctxs = calloc(cfg->ncerts, sizeof *c->ctxs))) {
        rc = -ENOMEM;
        goto out;
    }
    c->rotate_ms = 1000ull * (cfg->ticket_rotate_s ? cfg->ticket_rotate_s : DEFAULT_TICKET_ROTATE_S);
    c->alpn_strict = cfg->alpn_strict;
    if ((rc = tls_alpn_wire(cfg->alpn ? cfg->alpn : "http/1.1", "alpn", &c->alpn, &c->alpn_len, err)))
        goto out_msg;
    if (!cfg->disable_tickets && (rc = rotate_locked(c, mono_ms()))) {
        tls_error_set(err, "ticket keys: no random bytes");
        goto out_msg;
    }
    if (RAND_bytes(sid, sizeof sid) != 1) {
        tls_error_set(err, "session id context: no random bytes");
        rc = -EIO;
        goto out_msg;
    }
    if (cfg->client_auth != TLS_CLIENT_AUTH_NONE) {
        if (!(trust = X509_STORE_new())) {
            rc = -ENOMEM;
            goto out;
        }
        if (X509_STORE_load_file(trust, cfg->client_ca_file) != 1) {
            tls_error_set(err, "client_ca_file %s: cannot load", cfg->client_ca_file);
            goto out_msg;
        }
    }
    for (size_t i = 0; i < cfg->ncerts; i++) {
        char what[32];
        snprintf(what, sizeof what, "certs[%zu]", i);
        if (!(c->ctxs[i] = SSL_CTX_new(TLS_server_method()))) {
            tls_error_set(err, "%s: SSL_CTX_new failed", what);
            rc = -ENOMEM;
            goto out_msg;
        }
        c->nctx++;
        if ((rc = setup_one(c, c->ctxs[i], cfg, trust, sid, err)) ||
            (rc = tls_ctx_load_pair(c->ctxs[i], &cfg->certs[i], what, err)))
            goto out_msg;
        if ((rc = collect_names(c, SSL_CTX_get0_certificate(c->ctxs[i]), i)))
            goto out;
    }
    X509_STORE_free(trust);
    ERR_clear_error();
    return c;
out:
    if (rc == -ENOMEM)
        tls_error_set(err, "tls server ctx: out of memory");
out_msg:
    X509_STORE_free(trust);
    if (c)
        sctx_free(c);
    return NULL;
}

/* ---- connections ------------------------------------------------------- */

int tls_sock_server(struct tls_server_ctx *c, struct sock *s)
{
    if (tls_sock_is_tls(s) || s->fd < 0)
        return -EINVAL;
    SSL *ssl = SSL_new(c->ctxs[0]);
    struct tls_conn *conn = calloc(1, sizeof *conn);
    if (!ssl || !conn)
        goto fail;
    SSL_set_accept_state(ssl);
    if (tls_sock_attach(s, ssl, conn))
        goto fail;
    tls_server_ctx_ref(c);
    conn->sctx = c;
    return 0;
fail:
    SSL_free(ssl);
    free(conn);
    ERR_clear_error();
    return -ENOMEM;
}

/* ---- reload ------------------------------------------------------------ */

struct tls_server_holder *tls_server_holder_new(const struct tls_server_config *cfg, struct tls_error *err)
{
    struct tls_server_holder *h = calloc(1, sizeof *h);
    if (!h) {
        tls_error_set(err, "tls server holder: out of memory");
        return NULL;
    }
    if (!(h->cur = tls_server_ctx_new(cfg, err))) {
        free(h);
        return NULL;
    }
    pthread_mutex_init(&h->mu, NULL);
    return h;
}

void tls_server_holder_free(struct tls_server_holder *h)
{
    if (!h)
        return;
    tls_server_ctx_unref(h->cur);
    pthread_mutex_destroy(&h->mu);
    free(h);
}

struct tls_server_ctx *tls_server_holder_get(struct tls_server_holder *h)
{
    pthread_mutex_lock(&h->mu);
    struct tls_server_ctx *c = h->cur;
    tls_server_ctx_ref(c);
    pthread_mutex_unlock(&h->mu);
    return c;
}

int tls_server_reload(struct tls_server_holder *h, const struct tls_server_config *cfg, struct tls_error *err)
{
    /* Built outside the lock: loading keys takes milliseconds, accepts on
     * other threads must not wait for it. */
    struct tls_server_ctx *fresh = tls_server_ctx_new(cfg, err);
    if (!fresh)
        return -EINVAL;
    pthread_mutex_lock(&h->mu);
    struct tls_server_ctx *old = h->cur;
    h->cur = fresh;
    pthread_mutex_unlock(&h->mu);
    tls_server_ctx_unref(old);
    return 0;
}
