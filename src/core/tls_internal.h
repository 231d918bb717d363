/* tls_internal.h — what tls.c, tls_server.c and tls_client.c share.
 * Not a public contract: include tls.h from outside the TLS module. */
#ifndef STRATA_TLS_INTERNAL_H
#define STRATA_TLS_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#include <openssl/ssl.h>

#include "core/tls.h"

/* Per-connection state, hung on the SSL as ex_data (the sock's `tls` field
 * is the SSL * itself). Small on purpose: an idle connection costs the SSL,
 * this, and no record buffers (SSL_MODE_RELEASE_BUFFERS). */
struct tls_conn {
    struct tls_server_ctx *sctx; /* one of these holds a reference */
    struct tls_client_ctx *cctx;
    char *session_key;           /* client: cache key, NULL when not cached */
    char *expected_spiffe;       /* client: SPIFFE ID to verify, or NULL */
    char *err;                   /* first error as a sentence, or NULL */
    bool is_failed;              /* fatal error seen: no close_notify */
};

/* The SSL ex_data index of struct tls_conn, -1 if OpenSSL has none left. */
int tls_conn_index(void);
static inline struct tls_conn *tls_conn_of(const SSL *ssl)
{
    return SSL_get_ex_data(ssl, tls_conn_index());
}
/* Records msg as the connection's error unless one is recorded already. */
void tls_conn_set_error(struct tls_conn *c, const char *msg);
/* Binds ssl to s->fd, hangs c on it and makes s a TLS sock (s->ops,
 * s->tls). On failure (-ENOMEM) nothing is changed and the caller still
 * owns ssl and c. */
int tls_sock_attach(struct sock *s, SSL *ssl, struct tls_conn *c);

/* printf into err->msg, then ": " and OpenSSL's queued errors (earliest, the
 * root cause, and latest when different); clears the queue. */
void tls_error_set(struct tls_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends OpenSSL's queued errors to dst (as tls_error_set) and clears them. */
void tls_error_append_openssl(char *dst, size_t dstsz);

/* Versions, ciphers, groups, modes and options every ctx shares. */
int tls_ctx_setup(SSL_CTX *ctx, int min_version, int max_version, const char *ciphers,
                  const char *ciphersuites, struct tls_error *err);
/* Loads a cert (with chain) and its key into ctx, checking they match. */
int tls_ctx_load_pair(SSL_CTX *ctx, const struct tls_cert_pair *p, const char *what, struct tls_error *err);
/* A comma-separated ALPN list in wire format (malloc'd; *out NULL and *outlen
 * 0 for ""). -EINVAL with err filled on an empty or >255-byte name. */
int tls_alpn_wire(const char *list, const char *what, unsigned char **out, size_t *outlen, struct tls_error *err);
/* The first "spiffe://" URI SAN of x into out: 0, -ENOENT, -ENOSPC. */
int tls_cert_spiffe_id(X509 *x, char *out, size_t outsz);

#endif
