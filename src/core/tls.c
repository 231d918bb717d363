/* tls.c — the TLS transport (sock_ops over an SSL *), connection info, and
 * the ctx setup shared by the server (tls_server.c) and client
 * (tls_client.c) sides. */
#include "core/tls.h"

#include <errno.h>
#include <stdatomic.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "core/loop.h"
#include "core/tls_internal.h"

/* Mozilla "intermediate" minus DHE: forward-secret ECDHE only (no RSA key
 * exchange), AEAD only (no CBC: Lucky13-style padding oracles). Every
 * client from the last decade, openssl s_client included, offers these. */
#define CIPHERS_TLS12                                                     \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"                \
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"                \
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
#define CIPHERSUITES_TLS13 "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"
/* X25519 first: the fastest and what clients send a key share for. */
#define KEX_GROUPS "X25519:P-256:P-384"

/* One TLS record's worth of plaintext: iovecs smaller than this are
 * gathered so that a response head and its body leave in one record
 * rather than several tiny ones (each costs 22+ bytes and a write(2)). */
enum { COALESCE_MAX = 16384 };

/* ---- errors ------------------------------------------------------------ */

void tls_error_append_openssl(char *dst, size_t dstsz)
{
    unsigned long first = ERR_get_error(), last = first, e;
    char s[160];

    while ((e = ERR_get_error()) != 0)
        last = e;
    if (!first || !dst || !dstsz)
        return;
    size_t n = strnlen(dst, dstsz);
    ERR_error_string_n(first, s, sizeof s);
    if (n < dstsz)
        n += (size_t)snprintf(dst + n, dstsz - n, ": %s", s);
    if (last != first && n < dstsz) {
        ERR_error_string_n(last, s, sizeof s);
        snprintf(dst + n, dstsz - n, "; %s", s);
    }
}

void tls_error_set(struct tls_error *err, const char *fmt, ...)
{
    va_list ap;

    if (!err) {
        ERR_clear_error();
        return;
    }
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    tls_error_append_openssl(err->msg, sizeof err->msg);
}

static int conn_index = -1;
static pthread_once_t conn_index_once = PTHREAD_ONCE_INIT;

static void conn_index_init(void)
{
    conn_index = SSL_get_ex_new_index(0, "strata tls_conn", NULL, NULL, NULL);
}

int tls_conn_index(void)
{
    pthread_once(&conn_index_once, conn_index_init);
    return conn_index;
}

void tls_conn_set_error(struct tls_conn *c, const char *msg)
{
    if (c && !c->err)
        c->err = strdup(msg); /* NULL on ENOMEM: the error code still reports it */
}

/* ---- ctx setup --------------------------------------------------------- */

static int check_version(int v, const char *what, struct tls_error *err)
{
    if (v == TLS_VERSION_1_2 || v == TLS_VERSION_1_3)
        return 0;
    tls_error_set(err, "%s 0x%04x: only TLS 1.2 (0x0303) and TLS 1.3 (0x0304) are supported", what, (unsigned)v);
    return -EINVAL;
}

int tls_ctx_setup(SSL_CTX *ctx, int min_version, int max_version, const char *ciphers,
                  const char *ciphersuites, struct tls_error *err)
{
    int minv = min_version ? min_version : TLS_VERSION_1_2;
    int maxv = max_version ? max_version : TLS_VERSION_1_3;

    if (check_version(minv, "min_version", err) || check_version(maxv, "max_version", err))
        return -EINVAL;
    if (minv > maxv) {
        tls_error_set(err, "min_version 0x%04x is above max_version 0x%04x", (unsigned)minv, (unsigned)maxv);
        return -EINVAL;
    }
    if (!SSL_CTX_set_min_proto_version(ctx, minv) || !SSL_CTX_set_max_proto_version(ctx, maxv)) {
        tls_error_set(err, "cannot set protocol versions");
        return -EINVAL;
    }
    /* Renegotiation buys nothing since 1.3 and costs a CPU-exhaustion
     * vector; an EOF without close_notify may be a truncation attack. */
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    SSL_CTX_clear_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
    /* RELEASE_BUFFERS: an idle connection drops its two ~17 KiB record
     * buffers (34 KiB × 10,000 idle keep-alives is 340 MiB). */
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                              SSL_MODE_RELEASE_BUFFERS);
    /* Level 2: RSA/DH ≥ 2048 bits, ECC ≥ 224 bits, no SHA-1 signatures. */
    SSL_CTX_set_security_level(ctx, 2);
    if (!SSL_CTX_set_cipher_list(ctx, ciphers ? ciphers : CIPHERS_TLS12)) {
        tls_error_set(err, "ciphers \"%s\": no usable cipher", ciphers ? ciphers : CIPHERS_TLS12);
        return -EINVAL;
    }
    if (!SSL_CTX_set_ciphersuites(ctx, ciphersuites ? ciphersuites : CIPHERSUITES_TLS13)) {
        tls_error_set(err, "ciphersuites \"%s\": not a TLS 1.3 suite list",
                      ciphersuites ? ciphersuites : CIPHERSUITES_TLS13);
        return -EINVAL;
    }
    if (!SSL_CTX_set1_groups_list(ctx, KEX_GROUPS)) {
        tls_error_set(err, "groups \"%s\"", KEX_GROUPS);
        return -EINVAL;
    }
    return 0;
}

/* Never prompt on a terminal for a passphrase: encrypted keys are refused. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)buf, (void)size, (void)rwflag, (void)u;
    return -1;
}

static int check_readable(const char *what, const char *field, const char *file, struct tls_error *err)
{
    if (access(file, R_OK) == 0)
        return 0;
    int e = errno;
    ERR_clear_error();
    tls_error_set(err, "%s %s %s: %s", what, field, file, strerror(e));
    return -e;
}

static int load_chain_file(SSL_CTX *ctx, const char *what, const char *file, struct tls_error *err)
{
    int rc = check_readable(what, "chain_file", file, err);
    if (rc)
        return rc;
    BIO *bio = BIO_new_file(file, "r");
    int n = 0;
    if (!bio) {
        tls_error_set(err, "%s chain_file %s: cannot open", what, file);
        return -EIO;
    }
    X509 *x;
    while ((x = PEM_read_bio_X509(bio, NULL, no_passphrase, NULL)) != NULL) {
        if (!SSL_CTX_add0_chain_cert(ctx, x)) {
            X509_free(x);
            tls_error_set(err, "%s chain_file %s: certificate %d rejected", what, file, n + 1);
            rc = -EINVAL;
            goto out;
        }
        n++;
    }
    /* The loop ends on "no start line" after the last certificate. */
    unsigned long e = ERR_peek_last_error();
    if (n > 0 && ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE) {
        ERR_clear_error();
    } else {
        tls_error_set(err, "%s chain_file %s: %s", what, file,
                      n ? "bad PEM after the last certificate" : "no PEM certificate");
        rc = -EINVAL;
    }
out:
    BIO_free(bio);
    return rc;
}

int tls_ctx_load_pair(SSL_CTX *ctx, const struct tls_cert_pair *p, const char *what, struct tls_error *err)
{
    EVP_PKEY *key = NULL;
    BIO *bio = NULL;
    int rc;

    if (!p->cert_file || !p->key_file) {
        tls_error_set(err, "%s: cert_file and key_file are both required", what);
        return -EINVAL;
    }
    if ((rc = check_readable(what, "cert_file", p->cert_file, err)))
        return rc;
    if ((rc = check_readable(what, "key_file", p->key_file, err)))
        return rc;
    if (SSL_CTX_use_certificate_chain_file(ctx, p->cert_file) != 1) {
        tls_error_set(err, "%s cert_file %s: not a usable PEM certificate", what, p->cert_file);
        return -EINVAL;
    }
    if (p->chain_file && (rc = load_chain_file(ctx, what, p->chain_file, err)))
        return rc;
    bio = BIO_new_file(p->key_file, "r");
    if (bio)
        key = PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL);
    if (!key) {
        tls_error_set(err, "%s key_file %s: not a PEM private key (encrypted keys are not supported)", what,
                      p->key_file);
        rc = -EINVAL;
        goto out;
    }
    X509 *leaf = SSL_CTX_get0_certificate(ctx);
    if (!leaf || X509_check_private_key(leaf, key) != 1) {
        tls_error_set(err, "%s key_file %s does not match cert_file %s", what, p->key_file, p->cert_file);
        rc = -EINVAL;
        goto out;
    }
    if (SSL_CTX_use_PrivateKey(ctx, key) != 1 || SSL_CTX_check_private_key(ctx) != 1) {
        tls_error_set(err, "%s key_file %s: rejected", what, p->key_file);
        rc = -EINVAL;
        goto out;
    }
    rc = 0;
out:
    EVP_PKEY_free(key);
    BIO_free(bio);
    return rc;
}

int tls_alpn_wire(const char *list, const char *what, unsigned char **out, size_t *outlen,
                  struct tls_error *err)
{
    size_t len = strlen(list), n = 0;
    unsigned char *w;

    *out = NULL;
    *outlen = 0;
    if (len == 0)
        return 0;
    /* Each name gains a length byte and loses a comma: len + 1 bytes. */
    if (!(w = malloc(len + 1))) {
        tls_error_set(err, "%s: out of memory", what);
        return -ENOMEM;
    }
    const char *p = list;
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t k = comma ? (size_t)(comma - p) : strlen(p);
        if (k == 0 || k > 255) {
            free(w);
            tls_error_set(err, "%s \"%s\": protocol names must be 1 to 255 bytes", what, list);
            return -EINVAL;
        }
        w[n++] = (unsigned char)k;
        memcpy(w + n, p, k);
        n += k;
        if (!comma)
            break;
        p = comma + 1;
    }
    *out = w;
    *outlen = n;
    return 0;
}

int tls_cert_spiffe_id(X509 *x, char *out, size_t outsz)
{
    GENERAL_NAMES *sans = x ? X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL) : NULL;
    int rc = -ENOENT;

    if (outsz)
        out[0] = '\0';
    for (int i = 0; sans && i < sk_GENERAL_NAME_num(sans); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, i);
        if (g->type != GEN_URI)
            continue;
        const char *u = (const char *)ASN1_STRING_get0_data(g->d.uniformResourceIdentifier);
        size_t n = (size_t)ASN1_STRING_length(g->d.uniformResourceIdentifier);
        if (n < 9 || strncasecmp(u, "spiffe://", 9) != 0 || memchr(u, '\0', n))
            continue;
        if (n >= outsz) {
            rc = -ENOSPC;
        } else {
            memcpy(out, u, n);
            out[n] = '\0';
            rc = 0;
        }
        break;
    }
    GENERAL_NAMES_free(sans);
    return rc;
}

/* ---- the transport ----------------------------------------------------- */

/* Maps a failed SSL_* call to the sock contract. rc_on_close is what a
 * close_notify means for this operation (0 for read, an error otherwise). */
static int io_result(struct sock *s, int ret, const char *op, int rc_on_close)
{
    SSL *ssl = s->tls;
    int saved_errno = errno;
    int e = SSL_get_error(ssl, ret);
    struct tls_conn *c = tls_conn_of(ssl);
    char msg[256];
    int rc;

    switch (e) {
    case SSL_ERROR_WANT_READ:
        s->want = LOOP_READ;
        return -EAGAIN;
    case SSL_ERROR_WANT_WRITE:
        s->want = LOOP_WRITE;
        return -EAGAIN;
    case SSL_ERROR_ZERO_RETURN:
        ERR_clear_error();
        return rc_on_close;
    default:
        break;
    }
    unsigned long code = ERR_peek_error();
    if (e == SSL_ERROR_SYSCALL && saved_errno) {
        rc = -saved_errno;
        snprintf(msg, sizeof msg, "TLS %s: %s", op, strerror(saved_errno));
        ERR_clear_error();
    } else if (e == SSL_ERROR_SYSCALL ||
               (ERR_GET_LIB(code) == ERR_LIB_SSL && ERR_GET_REASON(code) == SSL_R_UNEXPECTED_EOF_WHILE_READING)) {
        rc = -ECONNRESET;
        snprintf(msg, sizeof msg, "TLS %s: connection closed by the peer without close_notify", op);
        ERR_clear_error();
    } else {
        rc = -EPROTO;
        snprintf(msg, sizeof msg, "TLS %s failed", op);
        tls_error_append_openssl(msg, sizeof msg);
        long vr = SSL_get_verify_result(ssl);
        size_t n = strlen(msg);
        if (vr != X509_V_OK && n < sizeof msg)
            snprintf(msg + n, sizeof msg - n, " (certificate: %s)", X509_verify_cert_error_string(vr));
    }
    if (c) {
        c->is_failed = true;
        tls_conn_set_error(c, msg);
    }
    return rc;
}

static ssize_t tls_read(struct sock *s, void *buf, size_t n)
{
    size_t got = 0;

    if (n == 0)
        return 0;
    ERR_clear_error();
    errno = 0;
    if (SSL_read_ex(s->tls, buf, n, &got) == 1)
        return (ssize_t)got;
    return io_result(s, 0, "read", 0);
}

static ssize_t tls_writev(struct sock *s, const struct iovec *iov, int iovcnt)
{
    unsigned char tmp[COALESCE_MAX];
    size_t done = 0, off = 0;
    int i = 0;

    for (;;) {
        while (i < iovcnt && off == iov[i].iov_len) {
            i++;
            off = 0;
        }
        if (i == iovcnt)
            return (ssize_t)done;
        const unsigned char *p = (const unsigned char *)iov[i].iov_base + off;
        size_t n = iov[i].iov_len - off;
        if (n < COALESCE_MAX && i + 1 < iovcnt) {
            /* Gather up to one record from this and the following iovecs.
             * A retry after -EAGAIN gathers at least as many bytes again,
             * as OpenSSL requires (see tls.h). */
            size_t o = off;
            n = 0;
            for (int j = i; j < iovcnt && n < COALESCE_MAX; j++, o = 0) {
                size_t k = iov[j].iov_len - o;
                if (k > COALESCE_MAX - n)
                    k = COALESCE_MAX - n;
                memcpy(tmp + n, (const unsigned char *)iov[j].iov_base + o, k);
                n += k;
            }
            p = tmp;
        }
        size_t w = 0;
        ERR_clear_error();
        errno = 0;
        if (SSL_write_ex(s->tls, p, n, &w) != 1) {
            int rc = io_result(s, 0, "write", -EPIPE);
            return done ? (ssize_t)done : rc;
        }
        /* Partial-write mode: w may be one record of n; advance by w. */
        done += w;
        while (w) {
            size_t k = iov[i].iov_len - off;
            if (w < k) {
                off += w;
                break;
            }
            w -= k;
            i++;
            off = 0;
        }
    }
}

/* Server-side handshakes of the whole process, for metrics. */
static _Atomic uint64_t hs_ok, hs_resumed, hs_failed;

void tls_server_handshake_stats(struct tls_handshake_stats *out)
{
    out->completed = atomic_load_explicit(&hs_ok, memory_order_relaxed);
    out->resumed = atomic_load_explicit(&hs_resumed, memory_order_relaxed);
    out->failed = atomic_load_explicit(&hs_failed, memory_order_relaxed);
}

static int tls_handshake(struct sock *s)
{
    if (SSL_is_init_finished(s->tls))
        return 0;
    ERR_clear_error();
    errno = 0;
    int ret = SSL_do_handshake(s->tls);
    bool server = SSL_is_server(s->tls);
    if (ret == 1) {
        if (server) {
            atomic_fetch_add_explicit(&hs_ok, 1, memory_order_relaxed);
            if (SSL_session_reused(s->tls))
                atomic_fetch_add_explicit(&hs_resumed, 1, memory_order_relaxed);
        }
        return 0;
    }
    int rc = io_result(s, ret, "handshake", -ECONNRESET);
    if (server && rc < 0 && rc != -EAGAIN)
        atomic_fetch_add_explicit(&hs_failed, 1, memory_order_relaxed);
    return rc;
}

static void tls_shutdown(struct sock *s)
{
    SSL *ssl = s->tls;
    if (!ssl)
        return;
    struct tls_conn *c = tls_conn_of(ssl);
    /* After a fatal error OpenSSL forbids SSL_shutdown; before the
     * handshake there is no session to close. Best effort: one try, no
     * waiting for the peer's close_notify. */
    if ((c && c->is_failed) || !SSL_is_init_finished(ssl))
        return;
    ERR_clear_error();
    (void)SSL_shutdown(ssl);
    ERR_clear_error();
}

static void tls_destroy(struct sock *s)
{
    SSL *ssl = s->tls;
    if (!ssl)
        return;
    struct tls_conn *c = tls_conn_of(ssl);
    SSL_free(ssl); /* first: it may still reach the ctx through callbacks */
    s->tls = NULL;
    if (c) {
        if (c->sctx)
            tls_server_ctx_unref(c->sctx);
        if (c->cctx)
            tls_client_ctx_unref(c->cctx);
        free(c->session_key);
        free(c->expected_spiffe);
        free(c->err);
        free(c);
    }
    ERR_clear_error();
}

const struct sock_ops tls_sock_ops = {
    .name = "tls",
    .read = tls_read,
    .writev = tls_writev,
    .handshake = tls_handshake,
    .shutdown = tls_shutdown,
    .destroy = tls_destroy,
};

int tls_sock_attach(struct sock *s, SSL *ssl, struct tls_conn *c)
{
    if (!SSL_set_fd(ssl, s->fd) || !SSL_set_ex_data(ssl, tls_conn_index(), c)) {
        ERR_clear_error();
        return -ENOMEM;
    }
    s->ops = &tls_sock_ops;
    s->tls = ssl;
    s->want = 0;
    return 0;
}

/* ---- connection info --------------------------------------------------- */

static SSL *done_ssl(const struct sock *s)
{
    if (!tls_sock_is_tls(s) || !s->tls || !SSL_is_init_finished(s->tls))
        return NULL;
    return s->tls;
}

const char *tls_sock_version(const struct sock *s)
{
    SSL *ssl = done_ssl(s);
    return ssl ? SSL_get_version(ssl) : NULL;
}

const char *tls_sock_cipher(const struct sock *s)
{
    SSL *ssl = done_ssl(s);
    const SSL_CIPHER *c = ssl ? SSL_get_current_cipher(ssl) : NULL;
    return c ? SSL_CIPHER_get_name(c) : NULL;
}

struct str tls_sock_alpn(const struct sock *s)
{
    SSL *ssl = done_ssl(s);
    const unsigned char *p = NULL;
    unsigned int n = 0;
    if (ssl)
        SSL_get0_alpn_selected(ssl, &p, &n);
    return p ? str_make((const char *)p, n) : STR_NULL;
}

const char *tls_sock_sni(const struct sock *s)
{
    if (!tls_sock_is_tls(s) || !s->tls)
        return NULL;
    return SSL_get_servername(s->tls, TLSEXT_NAMETYPE_host_name);
}

bool tls_session_reused(const struct sock *s)
{
    SSL *ssl = done_ssl(s);
    return ssl && SSL_session_reused(ssl);
}

bool tls_peer_verified(const struct sock *s)
{
    SSL *ssl = done_ssl(s);
    return ssl && SSL_get0_peer_certificate(ssl) && SSL_get_verify_result(ssl) == X509_V_OK;
}

int tls_peer_uri_san(const struct sock *s, char *out, size_t outsz)
{
    if (outsz)
        out[0] = '\0';
    if (!tls_peer_verified(s))
        return -ENOENT;
    return tls_cert_spiffe_id(SSL_get0_peer_certificate(s->tls), out, outsz);
}

int tls_sock_error(const struct sock *s, struct tls_error *err)
{
    struct tls_conn *c = tls_sock_is_tls(s) && s->tls ? tls_conn_of(s->tls) : NULL;

    if (c && c->err) {
        snprintf(err->msg, sizeof err->msg, "%s", c->err);
        return 0;
    }
    snprintf(err->msg, sizeof err->msg, "%s", c && c->is_failed ? "TLS error (out of memory recording it)" : "no TLS error");
    return c && c->is_failed ? 0 : -ENOENT;
}
