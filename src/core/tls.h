/* tls.h — TLS 1.2/1.3 for servers and clients on OpenSSL 3, as a sock transport.
 *
 * A plain accepted or connected `struct sock` becomes a TLS one with
 * tls_sock_server() / tls_sock_client(); from then on sock_read, sock_writev,
 * sock_handshake and sock_close speak TLS and HTTP code never knows.
 *
 * Server side: a `struct tls_server_ctx` is built once from a config (one or
 * more certificate/key pairs chosen by SNI, ALPN, session cache and rotating
 * ticket keys, optional client-certificate verification) and shared,
 * read-only and refcounted, by every worker thread. A
 * `struct tls_server_holder` keeps the current ctx and swaps it on reload:
 * new connections take the new ctx, open ones keep the ctx they started with
 * until they close.
 *
 * Client side: a `struct tls_client_ctx` verifies servers against a CA bundle
 * (or the system store), by hostname or by an expected SPIFFE ID, can present
 * a client certificate (mTLS), offers ALPN, and keeps the last session per
 * upstream so that reconnects resume.
 *
 * Choices (numbers and reasons in tls.c):
 *   - versions: TLS 1.2 minimum, 1.3 maximum; 1.0/1.1 are refused in config;
 *   - TLS 1.2 ciphers: ECDHE with AES-GCM or ChaCha20-Poly1305 only (no RSA
 *     key exchange, no CBC, no DHE); TLS 1.3: OpenSSL's three defaults;
 *   - ALPN: when the client offers nothing the server supports (say only
 *     "h2"), the handshake succeeds without ALPN (RFC 7301 allows the server
 *     to ignore the extension) unless `alpn_strict` asks for the fatal
 *     no_application_protocol alert;
 *   - renegotiation is refused; an EOF without close_notify is an error.
 *
 * Errors: functions return 0 or a negative errno; those that take a
 * `struct tls_error *` also fill it with a sentence naming the file or
 * option at fault and OpenSSL's own error string. After a failed handshake,
 * read or write, tls_sock_error() gives the same kind of sentence for the
 * connection.
 *
 * SIGPIPE: like the plain transport, the TLS transport writes with write(2);
 * the process must ignore SIGPIPE (the service framework does). */
#ifndef STRATA_TLS_H
#define STRATA_TLS_H

#include <stdbool.h>
#include <stddef.h>

#include "core/sock.h"
#include "core/str.h"

struct tls_error {
    char msg[256];
};

/* Protocol versions by their wire numbers (0 in a config: the default). */
enum {
    TLS_VERSION_1_2 = 0x0303,
    TLS_VERSION_1_3 = 0x0304,
};

/* A certificate and its key, PEM files. */
struct tls_cert_pair {
    const char *cert_file;  /* leaf first, optionally followed by its chain */
    const char *key_file;   /* ECDSA or RSA private key, unencrypted */
    const char *chain_file; /* optional: intermediates in a separate file */
};

enum tls_client_auth {
    TLS_CLIENT_AUTH_NONE,     /* no certificate requested */
    TLS_CLIENT_AUTH_OPTIONAL, /* requested; none is fine, a bad one fails the handshake */
    TLS_CLIENT_AUTH_REQUIRED, /* no valid certificate, no handshake */
};

struct tls_server_config {
    /* certs[0] is the default: served without SNI or for an unknown name.
     * Every cert serves the DNS names of its subjectAltName (its CN when it
     * has none), exactly or through a "*." wildcard of one label. When two
     * certs claim a name, the earlier one wins. */
    const struct tls_cert_pair *certs;
    size_t ncerts;
    int min_version;          /* 0 → TLS 1.2 */
    int max_version;          /* 0 → TLS 1.3 */
    const char *ciphers;      /* TLS 1.2 cipher list; NULL → the modern default */
    const char *ciphersuites; /* TLS 1.3 suites; NULL → OpenSSL's defaults */
    /* Comma-separated, in the server's order of preference. NULL →
     * "http/1.1"; "" → no ALPN. */
    const char *alpn;
    bool alpn_strict;
    enum tls_client_auth client_auth;
    const char *client_ca_file; /* trust bundle for client certs; needed unless NONE */
    unsigned session_timeout_s; /* 0 → 3600; also the ticket lifetime hint */
    size_t session_cache_size;  /* TLS 1.2 session-ID cache entries; 0 → 20480 */
    /* Ticket keys: a new one every ticket_rotate_s (0 → 3600); a ticket
     * decrypts for two to three periods (three keys kept), then the client
     * falls back to a full handshake. */
    unsigned ticket_rotate_s;
    bool disable_tickets;       /* session IDs only (stateful, per process) */
};

struct tls_server_ctx;

/* Builds a server ctx from cfg (the strings are copied or loaded; cfg may be
 * freed afterwards). Returns the ctx with one reference, or NULL with err
 * filled: a file that cannot be read, a PEM that does not parse, a key that
 * does not match its certificate, a bad version, cipher or ALPN list.
 * Thread-safe (touches no shared state). */
struct tls_server_ctx *tls_server_ctx_new(const struct tls_server_config *cfg, struct tls_error *err);
/* Takes / drops a reference; the last one frees the ctx. Thread-safe. */
void tls_server_ctx_ref(struct tls_server_ctx *c);
void tls_server_ctx_unref(struct tls_server_ctx *c);
/* Makes a fresh ticket-encryption key current now, keeping the two previous
 * ones for decryption (rotation also happens by itself every
 * ticket_rotate_s). 0, or -EIO if no random bytes. Thread-safe. */
int tls_server_rotate_ticket_keys(struct tls_server_ctx *c);

/* The ctx currently in force, swappable at run time. */
struct tls_server_holder;

/* Builds the first ctx from cfg (as tls_server_ctx_new). NULL with err
 * filled on failure (-ENOMEM is reported as a message too). */
struct tls_server_holder *tls_server_holder_new(const struct tls_server_config *cfg, struct tls_error *err);
/* Drops the holder's reference on its ctx; connections that hold their own
 * references are unaffected. Not while another thread uses the holder. */
void tls_server_holder_free(struct tls_server_holder *h);
/* The current ctx with a new reference the caller must drop with
 * tls_server_ctx_unref (tls_sock_server takes its own). Thread-safe: one
 * uncontended mutex, which is cheaper than an accept. */
struct tls_server_ctx *tls_server_holder_get(struct tls_server_holder *h);
/* Builds a ctx from cfg and makes it current. Connections accepted from
 * then on use it; open ones keep the old ctx until they close. On failure
 * returns <0 with err filled (the file named) and the old ctx stays in
 * force. Sessions and tickets from the old ctx do not resume on the new one
 * (its trust bundle may have changed): one full handshake per client.
 * Thread-safe. */
int tls_server_reload(struct tls_server_holder *h, const struct tls_server_config *cfg, struct tls_error *err);

struct tls_client_config {
    const char *ca_file;      /* trust bundle; NULL → the system default store */
    const char *cert_file;    /* optional client certificate (mTLS) ... */
    const char *key_file;     /* ... and its key: both or neither */
    const char *chain_file;   /* optional intermediates for cert_file */
    int min_version;          /* 0 → TLS 1.2 */
    int max_version;          /* 0 → TLS 1.3 */
    const char *ciphers;      /* as in tls_server_config */
    const char *ciphersuites;
    const char *alpn;         /* offered, comma-separated; NULL → "http/1.1"; "" → none */
    size_t session_cache_size; /* upstreams whose last session is kept; 0 → 256 */
    bool disable_session_reuse;
};

struct tls_client_ctx;

/* Builds a client ctx (cfg may be freed afterwards). NULL with err filled on
 * failure (unreadable CA bundle, bad client cert/key, bad option).
 * Thread-safe. */
struct tls_client_ctx *tls_client_ctx_new(const struct tls_client_config *cfg, struct tls_error *err);
/* Takes / drops a reference; the last one frees the ctx and its cached
 * sessions. Thread-safe. */
void tls_client_ctx_ref(struct tls_client_ctx *c);
void tls_client_ctx_unref(struct tls_client_ctx *c);
/* Number of upstreams with a cached session (for tests and metrics).
 * Thread-safe. */
size_t tls_client_session_count(struct tls_client_ctx *c);

/* Per-connection options of tls_sock_client (all optional). */
struct tls_client_conn_opts {
    /* Mesh: verify that the server's first URI SAN is exactly this
     * "spiffe://..." ID instead of checking a hostname. */
    const char *expected_spiffe_id;
    /* Which upstream the session cache files this connection under; NULL →
     * the SNI (or "" without one). The verification target (hostname or
     * SPIFFE ID) is always part of the key, so a session verified for one
     * identity is never resumed for another. */
    const char *session_key;
};

/* Turns the accepted plain sock s (fd set, non-blocking) into a TLS server
 * connection on ctx c: s->ops become the TLS transport, s->tls the SSL *.
 * The handshake happens on the first sock_handshake/sock_read. The
 * connection holds a reference on c until sock_close. 0, -EINVAL (s is
 * already TLS), -ENOMEM. Call on s's loop thread; c may be shared. */
int tls_sock_server(struct tls_server_ctx *c, struct sock *s);
/* Turns the connected plain sock s into a TLS client connection on c.
 * sni: the server name, sent as SNI (unless it is an IP literal) and, when
 * no expected_spiffe_id is given, checked against the certificate
 * (hostname or IP SAN; wildcards only as a whole left-most label). One of
 * sni and opts->expected_spiffe_id is required. The upstream's cached
 * session, if any, is offered for resumption (a copy: one session serves
 * any number of parallel connections), and the session the server hands
 * out replaces it. The connection holds a reference on c until sock_close.
 * 0, -EINVAL (no identity to verify, a SPIFFE ID not starting with
 * "spiffe://", s already TLS), -ENOMEM. Call on s's loop thread; c may be
 * shared by every thread (the session cache is behind a mutex, taken once
 * per connect and once per session received). */
int tls_sock_client(struct tls_client_ctx *c, struct sock *s, const char *sni,
                    const struct tls_client_conn_opts *opts);

/* The TLS transport. tls_sock_ops.read returns 0 only for a close_notify;
 * an EOF without one is -ECONNRESET. After a read that filled the caller's
 * buffer, more decrypted bytes may wait inside the transport while the fd
 * is not readable: read until -EAGAIN before waiting.
 * writev coalesces small iovecs into records of up to 16 KiB and may return
 * a short count. After -EAGAIN or a short count, the next writev must start
 * with the same bytes, at least as many of them as before (up to 16 KiB):
 * OpenSSL has already encrypted them. */
extern const struct sock_ops tls_sock_ops;

static inline bool tls_sock_is_tls(const struct sock *s) { return s->ops == &tls_sock_ops; }

/* Connection info. All take a sock on its loop thread and return
 * NULL/false/empty for a non-TLS sock or before the handshake completed.
 * Strings are static or live as long as the connection. */
const char *tls_sock_version(const struct sock *s); /* "TLSv1.3" */
const char *tls_sock_cipher(const struct sock *s);  /* "TLS_AES_128_GCM_SHA256" */
struct str tls_sock_alpn(const struct sock *s);     /* empty: none negotiated */
/* Server: the SNI the client requested. Client: the SNI sent. */
const char *tls_sock_sni(const struct sock *s);
bool tls_session_reused(const struct sock *s);
/* True when the peer presented a certificate and it verified. */
bool tls_peer_verified(const struct sock *s);
/* Copies the peer certificate's first "spiffe://" URI SAN into out. Only a
 * verified certificate counts. 0; -ENOENT (no verified certificate or no
 * such SAN); -ENOSPC (out too small; out is then ""). */
int tls_peer_uri_san(const struct sock *s, char *out, size_t outsz);
/* The first error of the connection as a sentence (what failed, OpenSSL's
 * error string, the certificate verification result). 0, or -ENOENT (no
 * error recorded; err says so). */
int tls_sock_error(const struct sock *s, struct tls_error *err);

/* Server-side handshakes in this process (all contexts, all threads):
 * completed (of which resumed from a session ticket) and failed. */
struct tls_handshake_stats {
    uint64_t completed, resumed, failed;
};
void tls_server_handshake_stats(struct tls_handshake_stats *out);

/* ---- one port for TLS and plaintext (mesh PERMISSIVE mode) -------------- */

/* Turns the accepted plain sock s (fd set, non-blocking) into a "sniffing"
 * transport on server ctx c, for a port that serves both TLS (mTLS) and
 * plaintext clients. Its handshake peeks (MSG_PEEK, nothing consumed) at
 * the first byte: until one is there it returns -EAGAIN with want =
 * LOOP_READ; 0x16 (a TLS handshake record, every ClientHello) makes s a
 * TLS server connection on c, as tls_sock_server, and the TLS handshake
 * goes on in the same call; any other byte makes s plain (sock_plain_ops)
 * and the handshake returns 0. EOF before any byte: -ECONNRESET.
 * After the handshake, tls_sock_is_tls(s) tells which it became.
 * A read or writev before the decision first drives it, as TLS does.
 * Until the decision s holds a reference on c (then the TLS connection
 * holds its own, or none is kept) and nothing is allocated; sock_close
 * drops it. 0, or -EINVAL (c NULL, s not a plain sock). Works as an
 * http1_server wrap: the server times the sniff and the TLS handshake
 * together with header_timeout_ms. Call on s's loop thread. */
int tls_sock_server_sniff(struct tls_server_ctx *c, struct sock *s);

/* Sniffed connections in this process (all threads): decided plaintext,
 * decided TLS, and closed before their first byte (EOF, error, timeout). */
struct tls_sniff_stats {
    uint64_t plain, tls, abandoned;
};
void tls_sniff_stats(struct tls_sniff_stats *out);

#endif
