/* TLS: certificates made at run time, real loopback sockets, both ends of
 * every connection driven by one strata loop; and openssl s_client as a
 * foreign client. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <pthread.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "check.h"
#include "core/buf.h"
#include "core/loop.h"
#include "core/net.h"
#include "core/sock.h"
#include "core/tls.h"

#define SPIFFE_ORDER "spiffe://cluster.local/ns/default/sa/order"
#define SPIFFE_USER "spiffe://cluster.local/ns/default/sa/user"

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
    long not_before, not_after; /* seconds from now */
    bool is_ca;
};

static X509 *make_cert(const struct cert_spec *sp, EVP_PKEY *key, X509 *issuer, EVP_PKEY *issuer_key)
{
    X509 *x = X509_new();
    X509V3_CTX v3;

    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), sp->serial);
    X509_gmtime_adj(X509_getm_notBefore(x), sp->not_before);
    X509_gmtime_adj(X509_getm_notAfter(x), sp->not_after);
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

/* A leaf signed by (ca, ca_key): name.pem and, with its own key, name.key. */
static void leaf(const char *name, const struct cert_spec *sp, EVP_PKEY *key, X509 *ca, EVP_PKEY *ca_key)
{
    char f[64];
    X509 *x = make_cert(sp, key, ca, ca_key);
    snprintf(f, sizeof f, "%s.pem", name);
    write_pem(f, x, NULL);
    snprintf(f, sizeof f, "%s.key", name);
    write_pem(f, NULL, key);
    X509_free(x);
}

static void make_certs(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/strata-tls-XXXXXX");
    if (!mkdtemp(tmpdir))
        abort();
    EVP_PKEY *ca_key = EVP_EC_gen("P-256"), *ca2_key = EVP_EC_gen("P-256");
    EVP_PKEY *ec = EVP_EC_gen("P-256"), *ec2 = EVP_EC_gen("P-256"), *rsa = EVP_RSA_gen(2048);
    EVP_PKEY *cl = EVP_EC_gen("P-256"), *cl2 = EVP_EC_gen("P-256");
    struct cert_spec ca_spec = { "strata test CA", NULL, NULL, 1, -3600, 86400, true };
    struct cert_spec ca2_spec = { "another CA", NULL, NULL, 2, -3600, 86400, true };
    X509 *ca = make_cert(&ca_spec, ca_key, NULL, NULL);
    X509 *ca2 = make_cert(&ca2_spec, ca2_key, NULL, NULL);
    write_pem("ca.pem", ca, NULL);
    write_pem("ca2.pem", ca2, NULL);

    const char *srv = "serverAuth";
    leaf("ec", &(struct cert_spec){ "localhost", "DNS:localhost,DNS:*.example.test,IP:127.0.0.1", srv, 1001, -60, 86400, false },
         ec, ca, ca_key);
    leaf("rsa", &(struct cert_spec){ "rsa.test", "DNS:rsa.test", srv, 1002, -60, 86400, false }, rsa, ca, ca_key);
    leaf("ec_new", &(struct cert_spec){ "localhost", "DNS:localhost", srv, 2002, -60, 86400, false }, ec2, ca, ca_key);
    leaf("expired", &(struct cert_spec){ "localhost", "DNS:localhost", srv, 1003, -172800, -86400, false }, ec, ca, ca_key);
    leaf("untrusted", &(struct cert_spec){ "localhost", "DNS:localhost", srv, 1004, -60, 86400, false }, ec, ca2, ca2_key);
    leaf("mesh", &(struct cert_spec){ "user", "URI:" SPIFFE_USER, "serverAuth,clientAuth", 1005, -60, 86400, false }, ec, ca,
         ca_key);
    leaf("client", &(struct cert_spec){ "order", "URI:" SPIFFE_ORDER, "clientAuth", 1006, -60, 86400, false }, cl, ca, ca_key);
    leaf("client_other", &(struct cert_spec){ "order", "URI:" SPIFFE_ORDER, "clientAuth", 1007, -60, 86400, false }, cl2,
         ca2, ca2_key);

    /* CA → intermediate → leaf: the intermediate comes from chain_file. */
    EVP_PKEY *int_key = EVP_EC_gen("P-256");
    struct cert_spec int_spec = { "strata intermediate", NULL, NULL, 3, -3600, 86400, true };
    X509 *inter = make_cert(&int_spec, int_key, ca, ca_key);
    write_pem("intermediate.pem", inter, NULL);
    leaf("chained", &(struct cert_spec){ "chain.test", "DNS:chain.test", srv, 1008, -60, 86400, false }, ec, inter,
         int_key);
    X509_free(inter);
    EVP_PKEY_free(int_key);

    FILE *f = fopen(path("garbage.pem"), "w");
    fputs("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n", f);
    fclose(f);

    X509_free(ca);
    X509_free(ca2);
    EVP_PKEY_free(ca_key);
    EVP_PKEY_free(ca2_key);
    EVP_PKEY_free(ec);
    EVP_PKEY_free(ec2);
    EVP_PKEY_free(rsa);
    EVP_PKEY_free(cl);
    EVP_PKEY_free(cl2);
}

static void remove_certs(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", tmpdir);
}

static struct tls_cert_pair cert(const char *name)
{
    char c[64], k[64];
    snprintf(c, sizeof c, "%s.pem", name);
    snprintf(k, sizeof k, "%s.key", name);
    return (struct tls_cert_pair){ strdup(path(c)), strdup(path(k)), NULL };
}

static void cert_free(struct tls_cert_pair *p)
{
    free((void *)p->cert_file);
    free((void *)p->key_file);
}

static long cert_serial(X509 *x) { return x ? ASN1_INTEGER_get(X509_get0_serialNumber(x)) : -1; }

/* ---- one connection, both ends on one loop ----------------------------- */

struct end {
    struct sock s;
    struct loop_io io;
    int hs;       /* 1 while the handshake runs, then 0 or the error */
    int err;      /* first read/write error */
    bool is_eof;
    bool echo;    /* write back what is read */
    struct buf in, out;
    size_t short_writes;
};

struct conn {
    struct end c, s;
    size_t echo_want;
};

static void end_step(struct end *e)
{
    unsigned want = 0;

    if (e->hs == 1) {
        int rc = sock_handshake(&e->s);
        if (rc == -EAGAIN) {
            loop_io_set(&e->io, e->s.want);
            return;
        }
        e->hs = rc;
        if (rc < 0) {
            loop_io_set(&e->io, 0);
            return;
        }
    }
    bool progress = true;
    while (progress && !e->err) {
        progress = false;
        while (buf_len(&e->out)) {
            /* Three iovecs: 100 bytes, up to 4900, the rest — exercises gathering. */
            size_t len = buf_len(&e->out), a = len < 100 ? len : 100, b = len < 5000 ? len : 5000;
            const char *p = buf_rptr(&e->out);
            struct iovec iov[3] = { { (void *)p, a }, { (void *)(p + a), b - a }, { (void *)(p + b), len - b } };
            ssize_t w = sock_writev(&e->s, iov, 3);
            if (w == -EAGAIN) {
                want |= e->s.want;
                break;
            }
            if (w <= 0) {
                e->err = w ? (int)w : -EIO;
                break;
            }
            if ((size_t)w < len)
                e->short_writes++;
            buf_consume(&e->out, (size_t)w);
        }
        while (!e->is_eof && !e->err) {
            if (buf_reserve(&e->in, 65536)) {
                e->err = -ENOBUFS;
                break;
            }
            ssize_t r = sock_read(&e->s, buf_wptr(&e->in), buf_writable(&e->in));
            if (r == -EAGAIN) {
                want |= e->s.want;
                break;
            }
            if (r == 0)
                e->is_eof = true;
            else if (r < 0)
                e->err = (int)r;
            else if (e->echo)
                progress = buf_append(&e->out, buf_wptr(&e->in), (size_t)r) == 0;
            else
                buf_commit(&e->in, (size_t)r);
        }
    }
    if (!e->is_eof)
        want |= LOOP_READ;
    loop_io_set(&e->io, e->err ? 0 : want);
}

static void end_cb(struct loop_io *io, unsigned ev)
{
    (void)ev;
    end_step(io->data);
}

static void end_init(struct loop *l, struct end *e, int fd)
{
    memset(e, 0, sizeof *e);
    sock_init_plain(&e->s, fd);
    e->hs = 1;
    buf_init(&e->in, 4 << 20);
    buf_init(&e->out, 4 << 20);
    loop_io_init(l, &e->io, fd, end_cb, e);
}

static void end_close(struct end *e)
{
    loop_io_close(&e->io);
    sock_close(&e->s);
    buf_free(&e->in);
    buf_free(&e->out);
}

struct server {
    int lfd;
    struct net_addr addr;
};

static void server_listen(struct server *srv)
{
    struct net_addr any;
    net_addr_parse(STR_LIT("127.0.0.1:0"), true, &any);
    if (net_listen(&any, NULL, &srv->lfd) || net_local_addr(srv->lfd, &srv->addr))
        abort();
}

static int accept_one(int lfd)
{
    struct net_addr peer;
    int fd = -1;
    struct pollfd pfd = { lfd, POLLIN, 0 };
    if (poll(&pfd, 1, 2000) == 1 && net_accept(lfd, &peer, &fd) == 0)
        return fd;
    return -1;
}

/* Connects, accepts, and makes both ends TLS; the handshake is not run. */
static int conn_open(struct loop *l, struct conn *k, const struct server *srv, struct tls_server_ctx *sc,
                     struct tls_client_ctx *cc, const char *sni, const struct tls_client_conn_opts *o,
                     int bufsize)
{
    int cfd, sfd, rc = net_connect(&srv->addr, &cfd);
    if (rc && rc != -EINPROGRESS)
        return rc;
    if ((sfd = accept_one(srv->lfd)) < 0) {
        close(cfd);
        return -ETIMEDOUT;
    }
    if (bufsize) {
        setsockopt(cfd, SOL_SOCKET, SO_SNDBUF, &bufsize, sizeof bufsize);
        setsockopt(cfd, SOL_SOCKET, SO_RCVBUF, &bufsize, sizeof bufsize);
        setsockopt(sfd, SOL_SOCKET, SO_SNDBUF, &bufsize, sizeof bufsize);
        setsockopt(sfd, SOL_SOCKET, SO_RCVBUF, &bufsize, sizeof bufsize);
    }
    end_init(l, &k->c, cfd);
    end_init(l, &k->s, sfd);
    k->s.echo = true;
    rc = tls_sock_client(cc, &k->c.s, sni, o);
    if (rc == 0)
        rc = tls_sock_server(sc, &k->s.s);
    return rc;
}

static void conn_close(struct conn *k)
{
    end_close(&k->c);
    end_close(&k->s);
}

typedef bool (*cond_fn)(struct conn *k);

static bool run_until(struct loop *l, struct conn *k, cond_fn cond, int ms)
{
    loop_update_time(l);
    uint64_t deadline = loop_now_ms(l) + (uint64_t)ms;
    while (!cond(k) && loop_now_ms(l) < deadline)
        loop_run_once(l, 20);
    return cond(k);
}

static bool hs_settled(struct conn *k)
{
    /* Settled: both ends finished or failed; in TLS 1.3 a client whose
     * certificate the server refuses learns it on its first read. */
    return k->c.hs != 1 && k->s.hs != 1 && !(k->c.hs == 0 && k->s.hs < 0 && !k->c.err && !k->c.is_eof);
}

/* Runs the handshake on both ends; true if both succeeded. */
static bool conn_handshake(struct loop *l, struct conn *k)
{
    end_step(&k->c);
    end_step(&k->s);
    run_until(l, k, hs_settled, 5000);
    return k->c.hs == 0 && k->s.hs == 0 && !k->c.err && !k->s.err;
}

static bool echo_done(struct conn *k)
{
    return buf_len(&k->c.in) >= k->echo_want || k->c.err || k->s.err || k->c.is_eof;
}

/* Sends data from the client, the server echoes it; true if it came back. */
static bool conn_echo(struct loop *l, struct conn *k, const void *data, size_t n)
{
    buf_reset(&k->c.in);
    buf_append(&k->c.out, data, n);
    k->echo_want = n;
    end_step(&k->c);
    run_until(l, k, echo_done, 10000);
    bool ok = buf_len(&k->c.in) == n && memcmp(buf_rptr(&k->c.in), data, n) == 0;
    buf_reset(&k->c.in);
    return ok;
}

static bool str_contains(const char *hay, const char *needle) { return hay && strstr(hay, needle) != NULL; }

static const char *sock_err(const struct sock *s)
{
    static struct tls_error e;
    tls_sock_error(s, &e);
    return e.msg;
}

/* ---- fixtures ---------------------------------------------------------- */

static struct tls_cert_pair c_ec, c_rsa, c_ec_new, c_expired, c_untrusted, c_mesh;

static struct tls_server_ctx *server_ctx(const struct tls_cert_pair *certs, size_t n, enum tls_client_auth auth)
{
    struct tls_server_config cfg = { .certs = certs, .ncerts = n, .client_auth = auth };
    struct tls_error err = { "" };
    if (auth != TLS_CLIENT_AUTH_NONE)
        cfg.client_ca_file = path("ca.pem");
    struct tls_server_ctx *c = tls_server_ctx_new(&cfg, &err);
    if (!c)
        fprintf(stderr, "server ctx: %s\n", err.msg);
    return c;
}

static struct tls_client_ctx *client_ctx(int max_version, const char *alpn, const char *client_cert)
{
    char c[64], k[64];
    struct tls_client_config cfg = { .ca_file = path("ca.pem"), .max_version = max_version, .alpn = alpn };
    struct tls_error err = { "" };
    if (client_cert) {
        snprintf(c, sizeof c, "%s", path(client_cert));
        snprintf(k, sizeof k, "%s", c);
        memcpy(k + strlen(k) - 3, "key", 3);
        cfg.cert_file = c;
        cfg.key_file = k;
    }
    struct tls_client_ctx *cc = tls_client_ctx_new(&cfg, &err);
    if (!cc)
        fprintf(stderr, "client ctx: %s\n", err.msg);
    return cc;
}

static struct loop *L;
static struct server S;

/* ---- tests ------------------------------------------------------------- */

static void test_config_errors(void)
{
    struct tls_error err = { "" };
    struct tls_cert_pair missing = { path("nope.pem"), path("ec.key"), NULL };
    struct tls_server_config cfg = { .certs = &missing, .ncerts = 1 };
    CHECK(tls_server_ctx_new(&cfg, &err) == NULL);
    CHECK(str_contains(err.msg, "nope.pem"));
    CHECK(str_contains(err.msg, "No such file"));

    struct tls_cert_pair mismatch = { c_ec.cert_file, c_rsa.key_file, NULL };
    cfg.certs = &mismatch;
    CHECK(tls_server_ctx_new(&cfg, &err) == NULL);
    CHECK(str_contains(err.msg, "does not match"));
    CHECK(str_contains(err.msg, "rsa.key"));

    struct tls_cert_pair garbage = { path("garbage.pem"), c_ec.key_file, NULL };
    cfg.certs = &garbage;
    CHECK(tls_server_ctx_new(&cfg, &err) == NULL);
    CHECK(str_contains(err.msg, "garbage.pem"));
    CHECK(str_contains(err.msg, "error:")); /* OpenSSL's own string */

    cfg.certs = &c_ec;
    cfg.min_version = 0x0302;
    CHECK(tls_server_ctx_new(&cfg, &err) == NULL);
    CHECK(str_contains(err.msg, "min_version"));
    cfg.min_version = 0;
    cfg.alpn = "http/1.1,,h2";
    CHECK(tls_server_ctx_new(&cfg, &err) == NULL);
    CHECK(str_contains(err.msg, "alpn"));
    cfg.alpn = NULL;
    cfg.ciphers = "RC4-MD5";
    CHECK(tls_server_ctx_new(&cfg, &err) == NULL);
    CHECK(str_contains(err.msg, "RC4-MD5"));
    cfg.ciphers = NULL;
    cfg.client_auth = TLS_CLIENT_AUTH_REQUIRED;
    CHECK(tls_server_ctx_new(&cfg, &err) == NULL);
    CHECK(str_contains(err.msg, "client_ca_file"));
    cfg.client_ca_file = path("garbage.pem");
    CHECK(tls_server_ctx_new(&cfg, &err) == NULL);
    CHECK(str_contains(err.msg, "garbage.pem"));

    struct tls_client_config ccfg = { .ca_file = path("missing-ca.pem") };
    CHECK(tls_client_ctx_new(&ccfg, &err) == NULL);
    CHECK(str_contains(err.msg, "missing-ca.pem"));
    ccfg.ca_file = path("ca.pem");
    ccfg.cert_file = c_ec.cert_file;
    CHECK(tls_client_ctx_new(&ccfg, &err) == NULL);
    CHECK(str_contains(err.msg, "key_file"));

    /* The good config builds. */
    cfg = (struct tls_server_config){ .certs = &c_ec, .ncerts = 1 };
    struct tls_server_ctx *sc = tls_server_ctx_new(&cfg, &err);
    CHECK(sc != NULL);
    tls_server_ctx_unref(sc);
}

static void test_handshake_versions(void)
{
    struct tls_server_ctx *sc = server_ctx(&c_ec, 1, TLS_CLIENT_AUTH_NONE);
    static const struct { int v; const char *name; } vs[] = { { TLS_VERSION_1_2, "TLSv1.2" }, { TLS_VERSION_1_3, "TLSv1.3" } };
    for (size_t i = 0; i < 2; i++) {
        struct tls_client_ctx *cc = client_ctx(vs[i].v, NULL, NULL);
        struct conn k;
        CHECK_INT(conn_open(L, &k, &S, sc, cc, "localhost", NULL, 0), 0);
        CHECK(!tls_sock_version(&k.c.s)); /* not before the handshake */
        CHECK(conn_handshake(L, &k));
        CHECK_STR(tls_sock_version(&k.c.s), vs[i].name);
        CHECK_STR(tls_sock_version(&k.s.s), vs[i].name);
        CHECK_STRV(tls_sock_alpn(&k.c.s), "http/1.1");
        CHECK_STRV(tls_sock_alpn(&k.s.s), "http/1.1");
        CHECK_STR(tls_sock_sni(&k.s.s), "localhost");
        CHECK_STR(tls_sock_sni(&k.c.s), "localhost");
        const char *cipher = tls_sock_cipher(&k.c.s);
        CHECK(str_contains(cipher, "GCM") || str_contains(cipher, "CHACHA20"));
        CHECK(!str_contains(cipher, "CBC"));
        CHECK(!tls_session_reused(&k.c.s));
        CHECK(tls_peer_verified(&k.c.s));
        CHECK(!tls_peer_verified(&k.s.s)); /* no client certificate asked */
        CHECK(conn_echo(L, &k, "hello", 5));
        struct tls_error e;
        CHECK_INT(tls_sock_error(&k.c.s, &e), -ENOENT);
        conn_close(&k);
        tls_client_ctx_unref(cc);
    }
    tls_server_ctx_unref(sc);
}

static int connect_once(struct tls_server_ctx *sc, struct tls_client_ctx *cc, const char *sni,
                        const struct tls_client_conn_opts *o, char *spiffe_seen, size_t spiffe_sz);

static void test_sni_selects_cert(void)
{
    struct tls_cert_pair certs[2] = { c_ec, c_rsa };
    struct tls_server_ctx *sc = server_ctx(certs, 2, TLS_CLIENT_AUTH_NONE);
    struct tls_client_ctx *cc = client_ctx(0, NULL, NULL);
    static const struct {
        const char *sni;
        long serial;   /* the cert the server picked */
        int key_type;  /* 0: the client refuses it (name mismatch) */
    } cases[] = {
        { "localhost", 1001, EVP_PKEY_EC },
        { "rsa.test", 1002, EVP_PKEY_RSA },
        { "RSA.Test", 1002, EVP_PKEY_RSA },      /* names are case-insensitive */
        { "api.example.test", 1001, EVP_PKEY_EC }, /* wildcard */
        { "127.0.0.1", 1001, EVP_PKEY_EC },      /* IP literal: no SNI, the default */
        { "unknown.test", 1001, 0 },             /* unknown: the default */
        { "a.b.example.test", 1001, 0 },         /* a wildcard covers one label */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct conn k;
        CHECK_INT(conn_open(L, &k, &S, sc, cc, cases[i].sni, NULL, 0), 0);
        bool ok = conn_handshake(L, &k);
        CHECK_INT(cert_serial(SSL_get_certificate(k.s.s.tls)), cases[i].serial);
        if (cases[i].key_type) {
            CHECK(ok);
            X509 *peer = SSL_get0_peer_certificate(k.c.s.tls);
            CHECK(peer && EVP_PKEY_get_base_id(X509_get0_pubkey(peer)) == cases[i].key_type);
            CHECK_INT(cert_serial(peer), cases[i].serial);
        } else {
            CHECK(!ok);
            CHECK(k.c.hs < 0);
            CHECK(str_contains(sock_err(&k.c.s), "hostname mismatch"));
        }
        if (strcmp(cases[i].sni, "127.0.0.1") == 0)
            CHECK(tls_sock_sni(&k.s.s) == NULL);
        conn_close(&k);
    }
    /* Resumption works on a cert that SNI switched to (tickets and the
     * session cache live on the default cert's ctx). */
    CHECK_INT(connect_once(sc, cc, "rsa.test", NULL, NULL, 0), 0); /* the loop above read no tickets */
    CHECK_INT(connect_once(sc, cc, "rsa.test", NULL, NULL, 0), 1);
    tls_client_ctx_unref(cc);
    tls_server_ctx_unref(sc);
}

static void test_alpn(void)
{
    struct tls_server_config cfg = { .certs = &c_ec, .ncerts = 1 };
    struct tls_error err;
    struct tls_server_ctx *sc = tls_server_ctx_new(&cfg, &err);
    cfg.alpn_strict = true;
    struct tls_server_ctx *strict = tls_server_ctx_new(&cfg, &err);
    cfg.alpn_strict = false;
    cfg.alpn = "h2,http/1.1";
    struct tls_server_ctx *h2 = tls_server_ctx_new(&cfg, &err);
    struct tls_client_ctx *only_h2 = client_ctx(0, "h2", NULL);
    struct tls_client_ctx *both = client_ctx(0, "http/1.1,h2", NULL);
    struct tls_client_ctx *none = client_ctx(0, "", NULL);
    struct conn k;

    /* Only h2 offered: no ALPN, but a handshake. */
    CHECK_INT(conn_open(L, &k, &S, sc, only_h2, "localhost", NULL, 0), 0);
    CHECK(conn_handshake(L, &k));
    CHECK_INT(tls_sock_alpn(&k.s.s).n, 0);
    CHECK_INT(tls_sock_alpn(&k.c.s).n, 0);
    conn_close(&k);
    /* ... unless the server is strict. */
    CHECK_INT(conn_open(L, &k, &S, strict, only_h2, "localhost", NULL, 0), 0);
    CHECK(!conn_handshake(L, &k));
    CHECK(str_contains(sock_err(&k.s.s), "application protocol"));
    conn_close(&k);
    /* The server's preference wins. */
    CHECK_INT(conn_open(L, &k, &S, h2, both, "localhost", NULL, 0), 0);
    CHECK(conn_handshake(L, &k));
    CHECK_STRV(tls_sock_alpn(&k.c.s), "h2");
    conn_close(&k);
    CHECK_INT(conn_open(L, &k, &S, sc, both, "localhost", NULL, 0), 0);
    CHECK(conn_handshake(L, &k));
    CHECK_STRV(tls_sock_alpn(&k.c.s), "http/1.1");
    conn_close(&k);
    /* No ALPN offered at all. */
    CHECK_INT(conn_open(L, &k, &S, strict, none, "localhost", NULL, 0), 0);
    CHECK(conn_handshake(L, &k));
    CHECK_INT(tls_sock_alpn(&k.s.s).n, 0);
    conn_close(&k);

    tls_client_ctx_unref(only_h2);
    tls_client_ctx_unref(both);
    tls_client_ctx_unref(none);
    tls_server_ctx_unref(sc);
    tls_server_ctx_unref(strict);
    tls_server_ctx_unref(h2);
}

/* A full connection: handshake, one echo (which also delivers TLS 1.3
 * tickets to the client), close. Returns whether the session was reused. */
static int connect_on(struct loop *l, const struct server *srv, struct tls_server_ctx *sc,
                      struct tls_client_ctx *cc, const char *sni, const struct tls_client_conn_opts *o,
                      char *spiffe_seen, size_t spiffe_sz)
{
    struct conn k;
    int reused = -1;
    if (conn_open(l, &k, srv, sc, cc, sni, o, 0) == 0 && conn_handshake(l, &k) && conn_echo(l, &k, "ping", 4)) {
        reused = tls_session_reused(&k.c.s);
        if (tls_session_reused(&k.s.s) != reused)
            reused = -2; /* no CHECK here: worker threads call this */
        if (spiffe_seen)
            tls_peer_uri_san(&k.s.s, spiffe_seen, spiffe_sz);
    }
    conn_close(&k);
    return reused;
}

static int connect_once(struct tls_server_ctx *sc, struct tls_client_ctx *cc, const char *sni,
                        const struct tls_client_conn_opts *o, char *spiffe_seen, size_t spiffe_sz)
{
    return connect_on(L, &S, sc, cc, sni, o, spiffe_seen, spiffe_sz);
}

static void test_resumption(void)
{
    for (int v = TLS_VERSION_1_2; v <= TLS_VERSION_1_3; v++) {
        for (int stateful = 0; stateful <= 1; stateful++) {
            struct tls_server_config cfg = { .certs = &c_ec, .ncerts = 1, .disable_tickets = stateful };
            struct tls_error err;
            struct tls_server_ctx *sc = tls_server_ctx_new(&cfg, &err);
            struct tls_client_ctx *cc = client_ctx(v, NULL, NULL);
            CHECK_INT(connect_once(sc, cc, "localhost", NULL, NULL, 0), 0);
            CHECK_INT(tls_client_session_count(cc), 1);
            /* Every later connection resumes, not every other one. */
            for (int i = 0; i < 4; i++)
                CHECK_INT(connect_once(sc, cc, "localhost", NULL, NULL, 0), 1);
            /* Another upstream key: its own (empty) slot. */
            struct tls_client_conn_opts o = { .session_key = "upstream-b" };
            CHECK_INT(connect_once(sc, cc, "localhost", &o, NULL, 0), 0);
            CHECK_INT(connect_once(sc, cc, "localhost", &o, NULL, 0), 1);
            CHECK_INT(tls_client_session_count(cc), 2);
            tls_client_ctx_unref(cc);
            tls_server_ctx_unref(sc);
        }
    }
}

static void test_ticket_key_rotation(void)
{
    struct tls_server_ctx *sc = server_ctx(&c_ec, 1, TLS_CLIENT_AUTH_NONE);
    struct tls_client_ctx *cc = client_ctx(TLS_VERSION_1_3, NULL, NULL);
    CHECK_INT(connect_once(sc, cc, "localhost", NULL, NULL, 0), 0);
    /* One rotation: the old key still decrypts (and a fresh ticket follows). */
    CHECK_INT(tls_server_rotate_ticket_keys(sc), 0);
    CHECK_INT(connect_once(sc, cc, "localhost", NULL, NULL, 0), 1);
    /* Three more: the key of the client's ticket is gone; full handshake. */
    for (int i = 0; i < 3; i++)
        CHECK_INT(tls_server_rotate_ticket_keys(sc), 0);
    CHECK_INT(connect_once(sc, cc, "localhost", NULL, NULL, 0), 0);
    CHECK_INT(connect_once(sc, cc, "localhost", NULL, NULL, 0), 1);

    /* Every TLS 1.3 resumption brings a fresh ticket (clients that use a
     * ticket only once, as OpenSSL's do, keep resuming). */
    struct conn k;
    CHECK_INT(conn_open(L, &k, &S, sc, cc, "localhost", NULL, 0), 0);
    CHECK(conn_handshake(L, &k));
    CHECK(tls_session_reused(&k.c.s));
    const unsigned char *t;
    size_t tn;
    SSL_SESSION_get0_ticket(SSL_get0_session(k.c.s.tls), &t, &tn);
    unsigned char *before = malloc(tn);
    memcpy(before, t, tn);
    CHECK(conn_echo(L, &k, "ping", 4)); /* the client reads the new ticket */
    SSL_SESSION_get0_ticket(SSL_get0_session(k.c.s.tls), &t, &tn);
    CHECK(tn > 0 && memcmp(before, t, tn) != 0);
    free(before);
    conn_close(&k);
    tls_client_ctx_unref(cc);
    tls_server_ctx_unref(sc);
}

static void test_mtls(void)
{
    struct tls_server_ctx *req = server_ctx(&c_ec, 1, TLS_CLIENT_AUTH_REQUIRED);
    struct tls_server_ctx *opt = server_ctx(&c_ec, 1, TLS_CLIENT_AUTH_OPTIONAL);
    char id[128];

    for (int v = TLS_VERSION_1_2; v <= TLS_VERSION_1_3; v++) {
        struct tls_client_ctx *anon = client_ctx(v, NULL, NULL);
        struct tls_client_ctx *good = client_ctx(v, NULL, "client.pem");
        struct tls_client_ctx *other = client_ctx(v, NULL, "client_other.pem");
        struct conn k;

        /* Required, no certificate: refused. */
        CHECK_INT(conn_open(L, &k, &S, req, anon, "localhost", NULL, 0), 0);
        CHECK(!conn_handshake(L, &k));
        CHECK(k.s.hs < 0);
        CHECK(k.c.hs < 0 || k.c.err < 0);
        CHECK(str_contains(sock_err(&k.s.s), "certificate"));
        conn_close(&k);
        /* Required, a certificate from another CA: refused. */
        CHECK_INT(conn_open(L, &k, &S, req, other, "localhost", NULL, 0), 0);
        CHECK(!conn_handshake(L, &k));
        CHECK(k.s.hs < 0);
        CHECK(k.c.hs < 0 || k.c.err < 0);
        CHECK(str_contains(sock_err(&k.s.s), "unable to get local issuer certificate"));
        conn_close(&k);
        /* Required, the right certificate: the SPIFFE ID is exposed. */
        CHECK_INT(conn_open(L, &k, &S, req, good, "localhost", NULL, 0), 0);
        CHECK(conn_handshake(L, &k));
        CHECK(conn_echo(L, &k, "x", 1));
        CHECK(tls_peer_verified(&k.s.s));
        CHECK_INT(tls_peer_uri_san(&k.s.s, id, sizeof id), 0);
        CHECK_STR(id, SPIFFE_ORDER);
        CHECK_INT(tls_peer_uri_san(&k.s.s, id, 10), -ENOSPC);
        CHECK_INT(tls_peer_uri_san(&k.c.s, id, sizeof id), -ENOENT); /* the server's cert has none */
        conn_close(&k);
        /* Resumed: still verified, still the same identity. */
        id[0] = '\0';
        CHECK_INT(connect_once(req, good, "localhost", NULL, id, sizeof id), 1);
        CHECK_STR(id, SPIFFE_ORDER);
        /* Optional: no certificate is fine, and nothing is claimed. */
        CHECK_INT(conn_open(L, &k, &S, opt, anon, "localhost", NULL, 0), 0);
        CHECK(conn_handshake(L, &k));
        CHECK(conn_echo(L, &k, "x", 1));
        CHECK(!tls_peer_verified(&k.s.s));
        CHECK_INT(tls_peer_uri_san(&k.s.s, id, sizeof id), -ENOENT);
        conn_close(&k);
        /* Optional with a certificate: verified. */
        CHECK_INT(conn_open(L, &k, &S, opt, good, "localhost", NULL, 0), 0);
        CHECK(conn_handshake(L, &k));
        CHECK(conn_echo(L, &k, "x", 1));
        CHECK(tls_peer_verified(&k.s.s));
        conn_close(&k);
        /* Optional with a certificate from another CA: refused. */
        CHECK_INT(conn_open(L, &k, &S, opt, other, "localhost", NULL, 0), 0);
        CHECK(!conn_handshake(L, &k));
        CHECK(k.s.hs < 0);
        conn_close(&k);

        tls_client_ctx_unref(anon);
        tls_client_ctx_unref(good);
        tls_client_ctx_unref(other);
    }
    tls_server_ctx_unref(req);
    tls_server_ctx_unref(opt);
}

static void expect_refused(struct tls_server_ctx *sc, struct tls_client_ctx *cc, const char *sni,
                           const struct tls_client_conn_opts *o, const char *why)
{
    struct conn k;
    CHECK_INT(conn_open(L, &k, &S, sc, cc, sni, o, 0), 0);
    CHECK(!conn_handshake(L, &k));
    CHECK(k.c.hs < 0);
    CHECK(k.s.hs < 0); /* the client's alert ends the server's handshake too */
    if (!str_contains(sock_err(&k.c.s), why)) {
        check_failures++;
        fprintf(stderr, "%s:%d: expected \"%s\" in \"%s\"\n", __FILE__, __LINE__, why, sock_err(&k.c.s));
    }
    conn_close(&k);
}

static void test_client_verify(void)
{
    struct tls_server_ctx *good = server_ctx(&c_ec, 1, TLS_CLIENT_AUTH_NONE);
    struct tls_server_ctx *expired = server_ctx(&c_expired, 1, TLS_CLIENT_AUTH_NONE);
    struct tls_server_ctx *untrusted = server_ctx(&c_untrusted, 1, TLS_CLIENT_AUTH_NONE);
    struct tls_server_ctx *mesh = server_ctx(&c_mesh, 1, TLS_CLIENT_AUTH_REQUIRED);
    struct tls_client_ctx *cc = client_ctx(0, NULL, NULL);
    struct tls_client_ctx *mc = client_ctx(0, NULL, "client.pem");

    expect_refused(good, cc, "other.test", NULL, "hostname mismatch");
    expect_refused(expired, cc, "localhost", NULL, "certificate has expired");
    expect_refused(untrusted, cc, "localhost", NULL, "unable to get local issuer certificate");

    /* Mesh: the SPIFFE ID, not a hostname, is what is verified. */
    struct tls_client_conn_opts o = { .expected_spiffe_id = SPIFFE_USER };
    struct conn k;
    CHECK_INT(conn_open(L, &k, &S, mesh, mc, "user.default.svc", &o, 0), 0);
    CHECK(conn_handshake(L, &k));
    char id[128];
    CHECK_INT(tls_peer_uri_san(&k.c.s, id, sizeof id), 0);
    CHECK_STR(id, SPIFFE_USER);
    CHECK_INT(tls_peer_uri_san(&k.s.s, id, sizeof id), 0);
    CHECK_STR(id, SPIFFE_ORDER);
    conn_close(&k);
    CHECK_INT(conn_open(L, &k, &S, mesh, mc, NULL, &o, 0), 0); /* no SNI at all */
    CHECK(conn_handshake(L, &k));
    conn_close(&k);
    /* Without SNI the session is filed under the SPIFFE ID, and resumes. */
    CHECK_INT(connect_once(mesh, mc, NULL, &o, NULL, 0), 0);
    CHECK_INT(connect_once(mesh, mc, NULL, &o, id, sizeof id), 1);
    CHECK_STR(id, SPIFFE_ORDER);
    struct tls_client_conn_opts wrong = { .expected_spiffe_id = "spiffe://cluster.local/ns/default/sa/payment" };
    expect_refused(mesh, mc, "user.default.svc", &wrong, "expected spiffe://cluster.local/ns/default/sa/payment");
    expect_refused(mesh, mc, "user.default.svc", &wrong, "\"" SPIFFE_USER "\"");
    expect_refused(good, mc, "localhost", &wrong, "SPIFFE ID is missing");

    /* Nothing to verify, or a malformed ID: refused up front. */
    struct sock s;
    sock_init_plain(&s, 0);
    CHECK_INT(tls_sock_client(cc, &s, NULL, NULL), -EINVAL);
    struct tls_client_conn_opts bad = { .expected_spiffe_id = "https://x" };
    CHECK_INT(tls_sock_client(cc, &s, "localhost", &bad), -EINVAL);
    CHECK(s.ops == &sock_plain_ops);

    tls_client_ctx_unref(cc);
    tls_client_ctx_unref(mc);
    tls_server_ctx_unref(good);
    tls_server_ctx_unref(expired);
    tls_server_ctx_unref(untrusted);
    tls_server_ctx_unref(mesh);
}

static void test_reload(void)
{
    struct tls_server_config cfg = { .certs = &c_ec, .ncerts = 1 };
    struct tls_error err = { "" };
    struct tls_server_holder *h = tls_server_holder_new(&cfg, &err);
    struct tls_client_ctx *cc = client_ctx(0, NULL, NULL);
    struct conn a, b, c;

    struct tls_server_ctx *sc = tls_server_holder_get(h);
    CHECK_INT(conn_open(L, &a, &S, sc, cc, "localhost", NULL, 0), 0);
    tls_server_ctx_unref(sc); /* the connection holds its own reference */
    CHECK(conn_handshake(L, &a));
    CHECK(conn_echo(L, &a, "before", 6));
    CHECK_INT(cert_serial(SSL_get0_peer_certificate(a.c.s.tls)), 1001);

    cfg.certs = &c_ec_new;
    CHECK_INT(tls_server_reload(h, &cfg, &err), 0);
    sc = tls_server_holder_get(h);
    CHECK_INT(conn_open(L, &b, &S, sc, cc, "localhost", NULL, 0), 0);
    tls_server_ctx_unref(sc);
    CHECK(conn_handshake(L, &b));
    CHECK_INT(cert_serial(SSL_get0_peer_certificate(b.c.s.tls)), 2002);
    CHECK(!tls_session_reused(&b.c.s)); /* a reload starts a fresh session space */
    /* The connection from before the reload stays up and keeps working. */
    CHECK(conn_echo(L, &a, "after", 5));
    CHECK(conn_echo(L, &b, "new", 3));
    conn_close(&a);

    /* A bad reload names the file and keeps the current ctx. */
    struct tls_cert_pair missing = { path("gone.pem"), c_ec.key_file, NULL };
    cfg.certs = &missing;
    CHECK(tls_server_reload(h, &cfg, &err) < 0);
    CHECK(str_contains(err.msg, "gone.pem"));
    struct tls_cert_pair mismatch = { c_ec_new.cert_file, c_rsa.key_file, NULL };
    cfg.certs = &mismatch;
    CHECK(tls_server_reload(h, &cfg, &err) < 0);
    CHECK(str_contains(err.msg, "does not match"));
    CHECK(str_contains(err.msg, "ec_new.pem"));
    sc = tls_server_holder_get(h);
    CHECK_INT(conn_open(L, &c, &S, sc, cc, "localhost", NULL, 0), 0);
    tls_server_ctx_unref(sc);
    CHECK(conn_handshake(L, &c));
    CHECK_INT(cert_serial(SSL_get0_peer_certificate(c.c.s.tls)), 2002);
    CHECK(conn_echo(L, &c, "still", 5));
    tls_server_holder_free(h); /* open connections keep their ctx alive */
    CHECK(conn_echo(L, &b, "orphan", 6));
    conn_close(&b);
    conn_close(&c);
    tls_client_ctx_unref(cc);
}

static void test_large_write(void)
{
    enum { N = 1 << 20 };
    struct tls_server_ctx *sc = server_ctx(&c_ec, 1, TLS_CLIENT_AUTH_NONE);
    struct tls_client_ctx *cc = client_ctx(0, NULL, NULL);
    unsigned char *data = malloc(N);
    RAND_bytes(data, N);
    struct conn k;
    /* 64 KiB socket buffers: the 1 MiB cannot leave in one go (16 KiB ones
     * stall loopback TCP on silly-window avoidance for seconds). */
    CHECK_INT(conn_open(L, &k, &S, sc, cc, "localhost", NULL, 65536), 0);
    CHECK(conn_handshake(L, &k));
    CHECK(conn_echo(L, &k, data, N));
    CHECK(k.c.short_writes > 0);
    CHECK(k.s.short_writes > 0);
    CHECK_INT(k.c.err, 0);
    CHECK_INT(k.s.err, 0);
    conn_close(&k);
    free(data);
    tls_client_ctx_unref(cc);
    tls_server_ctx_unref(sc);
}

static void test_chain_file(void)
{
    struct tls_cert_pair p = cert("chained");
    struct tls_client_ctx *cc = client_ctx(0, NULL, NULL);
    /* Without its intermediate the leaf does not verify... */
    struct tls_server_ctx *bare = server_ctx(&p, 1, TLS_CLIENT_AUTH_NONE);
    expect_refused(bare, cc, "chain.test", NULL, "unable to get local issuer certificate");
    /* ... with it, it does. */
    p.chain_file = path("intermediate.pem");
    struct tls_server_ctx *full = server_ctx(&p, 1, TLS_CLIENT_AUTH_NONE);
    CHECK_INT(connect_once(full, cc, "chain.test", NULL, NULL, 0), 0);
    struct tls_error err;
    p.chain_file = path("garbage.pem");
    struct tls_server_config cfg = { .certs = &p, .ncerts = 1 };
    CHECK(tls_server_ctx_new(&cfg, &err) == NULL);
    CHECK(str_contains(err.msg, "chain_file"));
    CHECK(str_contains(err.msg, "garbage.pem"));
    tls_server_ctx_unref(bare);
    tls_server_ctx_unref(full);
    tls_client_ctx_unref(cc);
    cert_free(&p);
}

/* Worker threads, one loop each, share one server ctx (tickets) and one
 * client ctx (session cache), as the proxy's workers do. */
struct worker {
    pthread_t th;
    struct tls_server_ctx *sc;
    struct tls_client_ctx *cc;
    int ok, reused;
};

enum { WORKER_CONNS = 20 };

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct loop *l = loop_new();
    struct server srv;
    server_listen(&srv);
    for (int i = 0; i < WORKER_CONNS; i++) {
        int r = connect_on(l, &srv, w->sc, w->cc, "localhost", NULL, NULL, 0);
        w->ok += r >= 0;
        w->reused += r == 1;
    }
    close(srv.lfd);
    loop_free(l);
    return NULL;
}

static void test_threads_share_ctx(void)
{
    struct tls_server_ctx *sc = server_ctx(&c_ec, 1, TLS_CLIENT_AUTH_NONE);
    struct tls_client_ctx *cc = client_ctx(0, NULL, NULL);
    struct worker w[2] = { { .sc = sc, .cc = cc }, { .sc = sc, .cc = cc } };
    CHECK_INT(connect_once(sc, cc, "localhost", NULL, NULL, 0), 0); /* a ticket for everyone */
    for (int i = 0; i < 2; i++)
        pthread_create(&w[i].th, NULL, worker_main, &w[i]);
    CHECK_INT(tls_server_rotate_ticket_keys(sc), 0); /* mid-run: the previous key still opens tickets */
    for (int i = 0; i < 2; i++) {
        pthread_join(w[i].th, NULL);
        CHECK_INT(w[i].ok, WORKER_CONNS);
        CHECK_INT(w[i].reused, WORKER_CONNS);
    }
    CHECK_INT(tls_client_session_count(cc), 1);
    tls_client_ctx_unref(cc);
    tls_server_ctx_unref(sc);
}

static bool server_eof_or_err(struct conn *k) { return k->s.is_eof || k->s.err; }

static void test_close(void)
{
    struct tls_server_ctx *sc = server_ctx(&c_ec, 1, TLS_CLIENT_AUTH_NONE);
    struct tls_client_ctx *cc = client_ctx(0, NULL, NULL);
    struct conn k;

    /* close_notify: the server reads 0. */
    CHECK_INT(conn_open(L, &k, &S, sc, cc, "localhost", NULL, 0), 0);
    CHECK(conn_handshake(L, &k));
    CHECK(conn_echo(L, &k, "bye", 3));
    loop_io_close(&k.c.io);
    sock_close(&k.c.s);
    run_until(L, &k, server_eof_or_err, 2000);
    CHECK(k.s.is_eof);
    CHECK_INT(k.s.err, 0);
    buf_free(&k.c.in);
    buf_free(&k.c.out);
    end_close(&k.s);

    /* A bare TCP FIN without close_notify: an error, not an EOF. */
    CHECK_INT(conn_open(L, &k, &S, sc, cc, "localhost", NULL, 0), 0);
    CHECK(conn_handshake(L, &k));
    CHECK(conn_echo(L, &k, "bye", 3));
    shutdown(k.c.s.fd, SHUT_WR);
    run_until(L, &k, server_eof_or_err, 2000);
    CHECK(!k.s.is_eof);
    CHECK_INT(k.s.err, -ECONNRESET);
    CHECK(str_contains(sock_err(&k.s.s), "without close_notify"));
    conn_close(&k);

    tls_client_ctx_unref(cc);
    tls_server_ctx_unref(sc);
}

/* The server end for s_client: accepted from the listener on the loop. */
static struct tls_server_ctx *sclient_ctx;
static struct conn sclient_conn;
static bool sclient_accepted;

static void sclient_accept_cb(struct loop_io *io, unsigned ev)
{
    struct net_addr peer;
    int fd;
    (void)ev;
    if (sclient_accepted || net_accept(io->fd, &peer, &fd) != 0)
        return;
    end_init(io->loop, &sclient_conn.s, fd);
    sclient_conn.s.echo = true;
    if (tls_sock_server(sclient_ctx, &sclient_conn.s.s) == 0)
        sclient_accepted = true;
    end_step(&sclient_conn.s);
}

static void test_openssl_s_client(void)
{
    char port[16], out_path[128];
    snprintf(port, sizeof port, "127.0.0.1:%u", net_addr_port(&S.addr));
    snprintf(out_path, sizeof out_path, "%s", path("s_client.out"));
    sclient_ctx = server_ctx(&c_ec, 1, TLS_CLIENT_AUTH_NONE);
    sclient_accepted = false;

    pid_t pid = fork();
    if (pid == 0) {
        int in = open("/dev/null", O_RDONLY), out = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        dup2(in, 0);
        dup2(out, 1);
        dup2(out, 2);
        execlp("openssl", "openssl", "s_client", "-connect", port, "-servername", "localhost", "-alpn",
               "http/1.1", "-tls1_3", (char *)NULL);
        _exit(127);
    }
    CHECK(pid > 0);
    struct loop_io lio;
    loop_io_init(L, &lio, S.lfd, sclient_accept_cb, NULL);
    loop_io_set(&lio, LOOP_READ);
    int status = -1;
    loop_update_time(L);
    uint64_t deadline = loop_now_ms(L) + 15000;
    while (pid > 0 && loop_now_ms(L) < deadline) {
        loop_run_once(L, 20);
        if (waitpid(pid, &status, WNOHANG) == pid) {
            pid = 0;
            break;
        }
    }
    if (pid > 0) { /* hung: reap it anyway */
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        check_failures++;
        fprintf(stderr, "%s:%d: openssl s_client did not finish in 15 s\n", __FILE__, __LINE__);
    }
    loop_io_close(&lio);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);

    char text[16384] = "";
    FILE *f = fopen(out_path, "r");
    if (f) {
        size_t n = fread(text, 1, sizeof text - 1, f);
        text[n] = '\0';
        fclose(f);
    }
    CHECK(str_contains(text, "New, TLSv1.3, Cipher is TLS_"));
    CHECK(str_contains(text, "ALPN protocol: http/1.1"));
    CHECK(str_contains(text, "Verify return code") || str_contains(text, "verify error")); /* got that far */
    CHECK(sclient_accepted);
    if (sclient_accepted) {
        CHECK_INT(sclient_conn.s.hs, 0);
        CHECK_STR(tls_sock_version(&sclient_conn.s.s), "TLSv1.3");
        CHECK_STRV(tls_sock_alpn(&sclient_conn.s.s), "http/1.1");
        CHECK_STR(tls_sock_sni(&sclient_conn.s.s), "localhost");
        end_close(&sclient_conn.s);
    }
    if (check_failures)
        fprintf(stderr, "--- s_client output ---\n%s\n---\n", text);
    tls_server_ctx_unref(sclient_ctx);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    make_certs();
    c_ec = cert("ec");
    c_rsa = cert("rsa");
    c_ec_new = cert("ec_new");
    c_expired = cert("expired");
    c_untrusted = cert("untrusted");
    c_mesh = cert("mesh");
    L = loop_new();
    server_listen(&S);

    RUN(test_config_errors);
    RUN(test_handshake_versions);
    RUN(test_sni_selects_cert);
    RUN(test_alpn);
    RUN(test_resumption);
    RUN(test_ticket_key_rotation);
    RUN(test_mtls);
    RUN(test_client_verify);
    RUN(test_reload);
    RUN(test_large_write);
    RUN(test_close);
    RUN(test_chain_file);
    RUN(test_threads_share_ctx);
    RUN(test_openssl_s_client);

    close(S.lfd);
    loop_free(L);
    struct tls_cert_pair *all[] = { &c_ec, &c_rsa, &c_ec_new, &c_expired, &c_untrusted, &c_mesh };
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        cert_free(all[i]);
    remove_certs();
    return check_done();
}
