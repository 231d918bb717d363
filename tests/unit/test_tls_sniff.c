/* One port for mTLS and plaintext (tls_sock_server_sniff): a real
 * http1_server on loopback whose wrap sniffs the first byte, clients that
 * speak plain HTTP, TLS without and with client certificates (OpenSSL and
 * curl), and clients that say nothing or one byte at a time. Certificates
 * are made at run time, as in test_tls.c. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "check.h"
#include "core/http1_server.h"
#include "core/loop.h"
#include "core/sock.h"
#include "core/tls.h"
#include "support/test_server.h"

#define SPIFFE_CLIENT "spiffe://test.local/ns/default/sa/client"
#define GET_REQUEST "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"

/* ---- certificates ------------------------------------------------------ */

static char tmpdir[64];

static const char *path(const char *name)
{
    static char bufs[16][128];
    static int next;
    char *p = bufs[next++ % 16];
    snprintf(p, sizeof bufs[0], "%s/%s", tmpdir, name);
    return p;
}

static void add_ext(X509 *x, X509V3_CTX *v3, int nid, const char *value)
{
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, v3, nid, value);
    if (!ext || !X509_add_ext(x, ext, -1)) {
        fprintf(stderr, "extension %d=%s failed\n", nid, value);
        abort();
    }
    X509_EXTENSION_free(ext);
}

struct cert_spec {
    const char *cn;
    const char *san; /* NULL: none */
    const char *eku; /* NULL: none */
    long serial;
    bool is_ca;
};

static X509 *make_cert(const struct cert_spec *sp, EVP_PKEY *key, X509 *issuer, EVP_PKEY *issuer_key)
{
    X509 *x = X509_new();
    X509V3_CTX v3;

    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), sp->serial);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400);
    X509_set_pubkey(x, key);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)sp->cn, -1, -1, 0);
    X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : name);
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, issuer ? issuer : x, x, NULL, NULL, 0);
    add_ext(x, &v3, NID_basic_constraints, sp->is_ca ? "critical,CA:TRUE" : "critical,CA:FALSE");
    add_ext(x, &v3, NID_key_usage, sp->is_ca ? "critical,keyCertSign,cRLSign" : "critical,digitalSignature");
    add_ext(x, &v3, NID_subject_key_identifier, "hash");
    if (issuer)
        add_ext(x, &v3, NID_authority_key_identifier, "keyid:always");
    if (sp->san)
        add_ext(x, &v3, NID_subject_alt_name, sp->san);
    if (sp->eku)
        add_ext(x, &v3, NID_ext_key_usage, sp->eku);
    X509_sign(x, issuer_key ? issuer_key : key, EVP_sha256());
    return x;
}

static void write_pem(const char *name, X509 *x, EVP_PKEY *key)
{
    FILE *f = fopen(path(name), "w");
    if (!f)
        abort();
    if (x)
        PEM_write_X509(f, x);
    if (key)
        PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL);
    fclose(f);
}

/* A leaf signed by (ca, ca_key) with a fresh key: name.pem and name.key. */
static void leaf(const char *name, const struct cert_spec *sp, X509 *ca, EVP_PKEY *ca_key)
{
    char f[64];
    EVP_PKEY *key = EVP_EC_gen("P-256");
    X509 *x = make_cert(sp, key, ca, ca_key);
    snprintf(f, sizeof f, "%s.pem", name);
    write_pem(f, x, NULL);
    snprintf(f, sizeof f, "%s.key", name);
    write_pem(f, NULL, key);
    X509_free(x);
    EVP_PKEY_free(key);
}

static void make_certs(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/strata-sniff-XXXXXX");
    if (!mkdtemp(tmpdir))
        abort();
    EVP_PKEY *ca_key = EVP_EC_gen("P-256"), *ca2_key = EVP_EC_gen("P-256");
    X509 *ca = make_cert(&(struct cert_spec){ "strata mesh CA", NULL, NULL, 1, true }, ca_key, NULL, NULL);
    X509 *ca2 = make_cert(&(struct cert_spec){ "another CA", NULL, NULL, 2, true }, ca2_key, NULL, NULL);
    write_pem("ca.pem", ca, NULL);
    leaf("server", &(struct cert_spec){ "localhost", "DNS:localhost,IP:127.0.0.1", "serverAuth", 1001, false }, ca,
         ca_key);
    leaf("client", &(struct cert_spec){ "client", "URI:" SPIFFE_CLIENT, "clientAuth", 1002, false }, ca, ca_key);
    leaf("client_other", &(struct cert_spec){ "client", "URI:" SPIFFE_CLIENT, "clientAuth", 1003, false }, ca2,
         ca2_key);
    X509_free(ca);
    X509_free(ca2);
    EVP_PKEY_free(ca_key);
    EVP_PKEY_free(ca2_key);
}

static void remove_certs(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", tmpdir);
}

/* ---- the server -------------------------------------------------------- */

static int aborted;
static void on_abort_count(struct http1_exchange *x)
{
    (void)x;
    __atomic_add_fetch(&aborted, 1, __ATOMIC_SEQ_CST);
}

/* Answers with what the connection turned out to be: "plain", or "tls
 * verified=<0|1> id=<SPIFFE ID or ->"; /park is never answered. */
static void who(struct http1_exchange *x, void *arg)
{
    char body[256], id[128];
    (void)arg;
    if (str_eq(x->req.path, STR_LIT("/park"))) {
        x->on_abort = on_abort_count; /* never answered: the client leaves */
        return;
    }
    if (!tls_sock_is_tls(x->sock)) {
        http1_respond(x, 200, NULL, 0, STR_LIT("plain"));
        return;
    }
    if (tls_peer_uri_san(x->sock, id, sizeof id) != 0)
        snprintf(id, sizeof id, "-");
    int n = snprintf(body, sizeof body, "tls verified=%d id=%s", tls_peer_verified(x->sock), id);
    http1_respond(x, 200, NULL, 0, str_make(body, (size_t)n));
}

static int wrap_sniff(struct sock *s, void *arg) { return tls_sock_server_sniff(arg, s); }

static struct tls_server_ctx *server_ctx(void)
{
    char c[128], k[128];
    snprintf(c, sizeof c, "%s", path("server.pem"));
    snprintf(k, sizeof k, "%s", path("server.key"));
    struct tls_cert_pair pair = { .cert_file = c, .key_file = k };
    struct tls_server_config tc = {
        .certs = &pair,
        .ncerts = 1,
        .client_auth = TLS_CLIENT_AUTH_OPTIONAL,
        .client_ca_file = path("ca.pem"),
    };
    struct tls_error err;
    struct tls_server_ctx *ctx = tls_server_ctx_new(&tc, &err);
    if (!ctx) {
        fprintf(stderr, "server ctx: %s\n", err.msg);
        abort();
    }
    return ctx;
}

static struct tls_server_ctx *SCTX;
static struct test_server TS;

static int start(struct test_server *ts, uint32_t header_timeout_ms)
{
    struct http1_server_config cfg = {
        .handler = who,
        .wrap = wrap_sniff,
        .wrap_arg = SCTX,
        .header_timeout_ms = header_timeout_ms,
    };
    return test_server_start(ts, &cfg);
}

/* ---- clients ----------------------------------------------------------- */

/* A whole response: the head and Content-Length bytes of body. */
static bool response_complete(const char *p, size_t n)
{
    const char *end = memmem(p, n, "\r\n\r\n", 4);
    if (!end)
        return false;
    const char *cl = strcasestr(p, "Content-Length: ");
    size_t head = (size_t)(end + 4 - p);
    return cl && cl < end && n - head >= (size_t)strtoul(cl + 16, NULL, 10);
}

static const char *body_of(const char *resp)
{
    const char *end = strstr(resp, "\r\n\r\n");
    return end ? end + 4 : "";
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static struct tls_sniff_stats sniff_now(void)
{
    struct tls_sniff_stats st;
    tls_sniff_stats(&st);
    return st;
}

/* Waits up to 2 s for *field (a counter in a fresh snapshot) to reach want. */
#define WAIT_STAT(field, want)                                                  \
    do {                                                                        \
        for (int w_ = 0; w_ < 400 && sniff_now().field < (want); w_++)          \
            usleep(5000);                                                       \
    } while (0)

/* A plaintext GET; the response in out. */
static size_t plain_get(uint16_t port, char *out, size_t cap)
{
    bool eof;
    int fd = test_connect(port);
    if (fd < 0)
        return 0;
    size_t n = 0;
    if (test_send_all(fd, GET_REQUEST, sizeof GET_REQUEST - 1) == 0)
        n = test_recv(fd, out, cap, 5000, &eof, response_complete);
    close(fd);
    return n;
}

/* A GET over TLS (blocking OpenSSL, 5 s socket timeouts), verifying the
 * server against ca.pem, presenting <cert>.pem if cert is not NULL, up to
 * max_version (0: TLS 1.3). 0 with
 * the response in out; -1 with the failing step and OpenSSL's reason in why. */
static int tls_get(uint16_t port, const char *cert, int max_version, char *out, size_t cap, char *why,
                   size_t whysz)
{
    int rc = -1, fd = test_connect(port);
    size_t n = 0;
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL *ssl = NULL;
    char f[64];

    out[0] = why[0] = '\0';
    if (fd < 0 || !ctx) {
        snprintf(why, whysz, "connect");
        goto out;
    }
    struct timeval tv = { 5, 0 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    if (max_version)
        SSL_CTX_set_max_proto_version(ctx, max_version);
    if (SSL_CTX_load_verify_file(ctx, path("ca.pem")) != 1)
        abort();
    if (cert) {
        snprintf(f, sizeof f, "%s.pem", cert);
        if (SSL_CTX_use_certificate_chain_file(ctx, path(f)) != 1)
            abort();
        snprintf(f, sizeof f, "%s.key", cert);
        if (SSL_CTX_use_PrivateKey_file(ctx, path(f), SSL_FILETYPE_PEM) != 1)
            abort();
    }
    ssl = SSL_new(ctx);
    SSL_set_fd(ssl, fd);
    SSL_set_tlsext_host_name(ssl, "localhost");
    SSL_set1_host(ssl, "localhost");
    const char *step = "handshake";
    if (SSL_connect(ssl) != 1)
        goto fail;
    step = "write";
    if (SSL_write(ssl, GET_REQUEST, (int)sizeof GET_REQUEST - 1) != (int)sizeof GET_REQUEST - 1)
        goto fail;
    step = "read";
    while (n + 1 < cap && !response_complete(out, n)) {
        int r = SSL_read(ssl, out + n, (int)(cap - 1 - n));
        if (r <= 0)
            goto fail;
        n += (size_t)r;
        out[n] = '\0';
    }
    rc = 0;
    goto out;
fail:
    snprintf(why, whysz, "%s: ", step);
    ERR_error_string_n(ERR_peek_last_error(), why + strlen(why), whysz - strlen(why));
out:
    ERR_clear_error();
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    if (fd >= 0)
        close(fd);
    return rc;
}

/* ---- tests ------------------------------------------------------------- */

/* The transport on its own, over a socketpair: the decision, its errors,
 * and a read that comes before any handshake. */
static void test_transport_direct(void)
{
    struct sock s;
    int sv[2];
    char b[64];

    /* Only a plain, open sock can start sniffing. */
    sock_init_plain(&s, -1);
    CHECK_INT(tls_sock_server_sniff(SCTX, &s), -EINVAL);
    CHECK_INT(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    sock_init_plain(&s, sv[0]);
    CHECK_INT(tls_sock_server_sniff(NULL, &s), -EINVAL);
    CHECK_INT(tls_sock_server_sniff(SCTX, &s), 0);
    CHECK_STR(s.ops->name, "sniff");
    CHECK_INT(tls_sock_server_sniff(SCTX, &s), -EINVAL); /* already sniffing */
    CHECK(!tls_sock_is_tls(&s));
    /* Nothing yet: wait for readability. */
    s.want = 0;
    CHECK_INT(sock_handshake(&s), -EAGAIN);
    CHECK_INT(s.want, LOOP_READ);
    CHECK_INT(sock_read(&s, b, sizeof b), -EAGAIN);
    /* A read before the handshake decides too, and reads from the start. */
    CHECK_INT(send(sv[1], "GET /", 5, 0), 5);
    CHECK_INT(sock_read(&s, b, sizeof b), 5);
    CHECK(memcmp(b, "GET /", 5) == 0);
    CHECK(s.ops == &sock_plain_ops);
    CHECK_INT(sock_handshake(&s), 0);
    sock_close(&s);
    close(sv[1]);

    /* EOF before any byte. */
    CHECK_INT(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    sock_init_plain(&s, sv[0]);
    CHECK_INT(tls_sock_server_sniff(SCTX, &s), 0);
    close(sv[1]);
    CHECK_INT(sock_handshake(&s), -ECONNRESET);
    CHECK_INT(sock_read(&s, b, sizeof b), 0);
    CHECK_STR(s.ops->name, "sniff");
    sock_close(&s);

    /* 0x16 alone: TLS now, its handshake waiting for the rest of the
     * ClientHello; the byte was peeked, not consumed. */
    CHECK_INT(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    sock_init_plain(&s, sv[0]);
    CHECK_INT(tls_sock_server_sniff(SCTX, &s), 0);
    CHECK_INT(send(sv[1], "\x16", 1, 0), 1);
    CHECK_INT(sock_handshake(&s), -EAGAIN);
    CHECK(tls_sock_is_tls(&s));
    CHECK_INT(s.want, LOOP_READ);
    sock_close(&s);
    close(sv[1]);
}

static void test_plaintext(void)
{
    struct tls_sniff_stats before = sniff_now();
    char out[2048];
    size_t n = plain_get(TS.port, out, sizeof out);
    CHECK(n > 0 && strncmp(out, "HTTP/1.1 200 ", 13) == 0);
    CHECK_STR(body_of(out), "plain");
    CHECK(sniff_now().plain >= before.plain + 1);
}

static void test_keepalive_stays_plain(void)
{
    char out[2048];
    bool eof;
    int fd = test_connect(TS.port);
    for (int i = 0; i < 2; i++) {
        CHECK_INT(test_send_all(fd, GET_REQUEST, sizeof GET_REQUEST - 1), 0);
        size_t n = test_recv(fd, out, sizeof out, 5000, &eof, response_complete);
        CHECK(n > 0 && strncmp(out, "HTTP/1.1 200 ", 13) == 0);
        CHECK_STR(body_of(out), "plain");
    }
    close(fd);
}

static void test_mtls(void)
{
    struct tls_sniff_stats before = sniff_now();
    char out[2048], why[256];
    int rc = tls_get(TS.port, "client", 0, out, sizeof out, why, sizeof why);
    CHECK_INT(rc, 0);
    if (rc)
        fprintf(stderr, "  mtls: %s\n", why);
    CHECK(strncmp(out, "HTTP/1.1 200 ", 13) == 0);
    CHECK_STR(body_of(out), "tls verified=1 id=" SPIFFE_CLIENT);
    CHECK(sniff_now().tls >= before.tls + 1);
}

static void test_tls_without_client_cert(void)
{
    char out[2048], why[256];
    int rc = tls_get(TS.port, NULL, 0, out, sizeof out, why, sizeof why);
    CHECK_INT(rc, 0);
    if (rc)
        fprintf(stderr, "  tls: %s\n", why);
    CHECK(strncmp(out, "HTTP/1.1 200 ", 13) == 0);
    CHECK_STR(body_of(out), "tls verified=0 id=-");
}

static void test_tls_client_cert_other_ca(void)
{
    struct tls_handshake_stats hs0, hs1;
    char out[2048], why[256];

    /* TLS 1.2: the server checks the certificate before its Finished, so
     * the client's handshake itself ends with the unknown_ca alert. */
    tls_server_handshake_stats(&hs0);
    int rc = tls_get(TS.port, "client_other", TLS1_2_VERSION, out, sizeof out, why, sizeof why);
    CHECK_INT(rc, -1);
    CHECK(strstr(out, "HTTP/1.1") == NULL);
    CHECK(strncmp(why, "handshake: ", 11) == 0 && strstr(why, "unknown ca") != NULL);
    if (!strstr(why, "unknown ca"))
        fprintf(stderr, "  other CA, TLS 1.2: %s\n", why);
    /* TLS 1.3: the client finishes first; the alert, or the reset that
     * overtakes it, meets its request. Either way no answer, and the
     * server counts a failed handshake. */
    rc = tls_get(TS.port, "client_other", 0, out, sizeof out, why, sizeof why);
    CHECK_INT(rc, -1);
    CHECK(strstr(out, "HTTP/1.1") == NULL);
    for (int i = 0; i < 400; i++) {
        tls_server_handshake_stats(&hs1);
        if (hs1.failed >= hs0.failed + 2)
            break;
        usleep(5000);
    }
    CHECK(hs1.failed >= hs0.failed + 2);
    CHECK_INT(hs1.completed, hs0.completed);
}

/* A client that connects and says nothing is closed by the header timeout,
 * like any slow handshake, and counted as abandoned. */
static void test_silent_client_times_out(void)
{
    struct test_server ts;
    char out[256];
    bool eof;
    CHECK_INT(start(&ts, 200), 0);
    struct tls_sniff_stats before = sniff_now();
    uint64_t t0 = now_ms();
    int fd = test_connect(ts.port);
    size_t n = test_recv(fd, out, sizeof out, 3000, &eof, NULL);
    uint64_t took = now_ms() - t0;
    CHECK_INT(n, 0);
    CHECK(eof);
    CHECK(took >= 150 && took < 2000);
    if (took < 150 || took >= 2000)
        fprintf(stderr, "  closed after %llu ms\n", (unsigned long long)took);
    WAIT_STAT(abandoned, before.abandoned + 1);
    CHECK(sniff_now().abandoned >= before.abandoned + 1);
    for (int i = 0; i < 400 && http1_server_stats(ts.server)->active != 0; i++)
        usleep(5000); /* the fd closes a moment before the count drops */
    CHECK_INT(http1_server_stats(ts.server)->timeouts, 1);
    CHECK_INT(http1_server_stats(ts.server)->active, 0);
    close(fd);
    test_server_stop(&ts);
}

/* One byte decides: 'G' alone turns the connection plain before the rest
 * of the request is sent. */
static void test_first_byte_then_rest(void)
{
    char out[2048];
    bool eof;
    struct tls_sniff_stats before = sniff_now();
    int fd = test_connect(TS.port);
    CHECK_INT(test_send_all(fd, "G", 1), 0);
    WAIT_STAT(plain, before.plain + 1);
    CHECK_INT(sniff_now().plain, before.plain + 1);
    usleep(100 * 1000);
    CHECK_INT(test_send_all(fd, &GET_REQUEST[1], sizeof GET_REQUEST - 2), 0);
    size_t n = test_recv(fd, out, sizeof out, 5000, &eof, response_complete);
    CHECK(n > 0 && strncmp(out, "HTTP/1.1 200 ", 13) == 0);
    CHECK_STR(body_of(out), "plain");
    close(fd);
}

/* A sniffed plaintext connection is the plain transport itself, so the
 * server's plain-only care applies: a client leaving while its request is
 * handled aborts the work. */
static void test_plain_client_abort_noticed(void)
{
    int fd = test_connect(TS.port);
    uint64_t before = http1_server_stats(TS.server)->requests;
    static const char req[] = "GET /park HTTP/1.1\r\nHost: a\r\n\r\n";
    CHECK_INT(test_send_all(fd, req, sizeof req - 1), 0);
    for (int i = 0; i < 400 && http1_server_stats(TS.server)->requests == before; i++)
        usleep(5000);
    close(fd);
    for (int i = 0; i < 400 && !__atomic_load_n(&aborted, __ATOMIC_SEQ_CST); i++)
        usleep(5000);
    CHECK_INT(__atomic_load_n(&aborted, __ATOMIC_SEQ_CST), 1);
}

/* Not HTTP and not TLS: plain, and the HTTP parser refuses it. */
static void test_garbage_is_plain_400(void)
{
    char out[2048];
    bool eof;
    int fd = test_connect(TS.port);
    CHECK_INT(test_send_all(fd, "\x01\x02\r\n\r\n", 6), 0);
    size_t n = test_recv(fd, out, sizeof out, 5000, &eof, NULL);
    CHECK(n > 0 && strncmp(out, "HTTP/1.1 400 ", 13) == 0);
    CHECK(eof);
    close(fd);
}

/* curl, a foreign client, on both sides of the same port. */
static void test_curl_both_ways(void)
{
    char cmd[2048], out[512];
    snprintf(cmd, sizeof cmd,
             "curl -sS --max-time 5 http://127.0.0.1:%u/ -w ' %%{http_code}|' --next -sS --max-time 5 "
             "--cacert %s --cert %s --key %s --resolve localhost:%u:127.0.0.1 https://localhost:%u/ "
             "-w ' %%{http_code}' 2>&1",
             TS.port, path("ca.pem"), path("client.pem"), path("client.key"), TS.port, TS.port);
    FILE *p = popen(cmd, "r");
    size_t n = p ? fread(out, 1, sizeof out - 1, p) : 0;
    out[n] = '\0';
    if (p)
        pclose(p);
    CHECK_STR(out, "plain 200|tls verified=1 id=" SPIFFE_CLIENT " 200");
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    make_certs();
    SCTX = server_ctx();
    if (start(&TS, 5000) != 0)
        abort();

    RUN(test_transport_direct);
    RUN(test_plaintext);
    RUN(test_keepalive_stays_plain);
    RUN(test_mtls);
    RUN(test_tls_without_client_cert);
    RUN(test_tls_client_cert_other_ca);
    RUN(test_silent_client_times_out);
    RUN(test_first_byte_then_rest);
    RUN(test_plain_client_abort_noticed);
    RUN(test_garbage_is_plain_400);
    RUN(test_curl_both_ways);

    /* A connection still undecided when the server closes everything: its
     * reference on the ctx must go too (ASan reports the leak otherwise). */
    struct tls_sniff_stats before = sniff_now();
    int fd = test_connect(TS.port);
    for (int i = 0; i < 400 && http1_server_stats(TS.server)->active == 0; i++)
        usleep(5000);
    test_server_stop(&TS);
    CHECK(sniff_now().abandoned >= before.abandoned + 1);
    close(fd);
    tls_server_ctx_unref(SCTX);
    SCTX = NULL; /* unreachable now: a reference left behind shows as a leak */
    remove_certs();
    return check_done();
}
