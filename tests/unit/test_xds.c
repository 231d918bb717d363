/* The proxy protocol end to end: xds.c hosted on a real service (one
 * worker, 127.0.0.1:0) and the real strata-proxy binary started with
 * --control. The proxy gets its certificate by CSR and its config by
 * long-poll, serves it, swaps in a new version within 2 s, refuses a
 * listener change and keeps polling, renews its short-lived certificate;
 * a wrong token stops it at start with a clear message. The endpoints
 * are also checked directly over a raw socket: 401, 404, 304 after
 * wait=1, 400 on a garbage CSR, and a long-poll whose client leaves. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "check.h"
#include "control/ca.h"
#include "control/xds.h"
#include "core/service.h"
#include "support/test_server.h"

#define TOKEN "s3cret-token-p1"
#define SPIFFE "spiffe://strata.local/ns/default/sa/gateway"

static char tmpdir[256];
static char proxy_bin[PATH_MAX];
static struct ca *ca;
static struct xds *xds;
static struct service *svc;
static uint16_t port;
static pthread_t svc_thread;
static struct loop *worker_loop;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- the service, and running things on its worker loop ------------------------------ */

static void worker_start(struct loop *l, int worker, void *arg)
{
    (void)worker;
    (void)arg;
    pthread_mutex_lock(&mu);
    worker_loop = l;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
}

static void *svc_main(void *arg)
{
    (void)arg;
    service_run(svc);
    return NULL;
}

struct on_loop {
    void (*fn)(void *arg);
    void *arg;
    bool done;
};
static void on_loop_cb(void *arg)
{
    struct on_loop *o = arg;
    o->fn(o->arg);
    pthread_mutex_lock(&mu);
    o->done = true;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
}
/* Runs fn(arg) on the service's worker loop (xds_* must be called there) and waits. */
static void on_loop(void (*fn)(void *arg), void *arg)
{
    struct on_loop o = { fn, arg, false };
    if (loop_post(worker_loop, on_loop_cb, &o) < 0)
        return;
    pthread_mutex_lock(&mu);
    while (!o.done)
        pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
}

struct set_args {
    const char *id, *version, *json;
    int rc;
};
static void set_cb(void *arg)
{
    struct set_args *a = arg;
    a->rc = xds_set_config(xds, a->id, a->version, a->json, strlen(a->json));
}
static int set_config(const char *id, const char *version, const char *json)
{
    struct set_args a = { id, version, json, -1 };
    on_loop(set_cb, &a);
    return a.rc;
}

struct acked_args {
    const char *id;
    char out[64];
};
static void acked_cb(void *arg)
{
    struct acked_args *a = arg;
    const char *v = xds_acked_version(xds, a->id);
    snprintf(a->out, sizeof a->out, "%s", v ? v : "");
}
static void acked(const char *id, char out[64])
{
    struct acked_args a = { .id = id };
    on_loop(acked_cb, &a);
    memcpy(out, a.out, 64);
}

static int start_service(void)
{
    char dir[300];
    snprintf(dir, sizeof dir, "%s/ca", tmpdir);
    char err[512];
    if (ca_open(dir, &ca, err, sizeof err) < 0) {
        fprintf(stderr, "ca_open: %s\n", err);
        return -1;
    }
    xds = xds_new(ca, 0);
    setenv("WORKERS", "1", 1);
    setenv("LISTEN_ADDR", "127.0.0.1:0", 1);
    setenv("SHUTDOWN_TIMEOUT_MS", "500", 1);
    struct service_config cfg = { .name = "test-xds", .listen = "127.0.0.1:0", .workers = 1 };
    svc = service_new(&cfg);
    if (!xds || !svc || xds_register(xds, svc) < 0)
        return -1;
    service_on_worker(svc, worker_start, NULL, NULL);
    const char *dns[] = { "localhost" }, *ips[] = { "127.0.0.1" };
    struct ca_names names = { .spiffe_id = SPIFFE, .dns = dns, .ndns = 1, .ips = ips, .nips = 1 };
    if (xds_add_proxy(xds, "p1", TOKEN, &names) < 0)
        return -1;
    /* p2: certificates of 4 s, renewed every 2 s */
    names.ttl_s = 4;
    if (xds_add_proxy(xds, "p2", "token-p2", &names) < 0 || service_bind(svc) < 0)
        return -1;
    port = service_port(svc);
    pthread_create(&svc_thread, NULL, svc_main, NULL);
    pthread_mutex_lock(&mu);
    while (!worker_loop)
        pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
    return 0;
}

/* ---- raw HTTP ----------------------------------------------------------------------- */

static bool whole_response(const char *p, size_t n)
{
    const char *end = memmem(p, n, "\r\n\r\n", 4);
    if (!end)
        return false;
    const char *cl = strcasestr(p, "Content-Length:");
    size_t len = cl && cl < end ? strtoul(cl + 15, NULL, 10) : 0;
    return n >= (size_t)(end + 4 - p) + len;
}

/* One request on a fresh connection; returns the status, the response in out. */
static int http(uint16_t to, const char *req, char *out, size_t cap, int timeout_ms)
{
    out[0] = '\0';
    int fd = test_connect(to);
    if (fd < 0)
        return -1;
    bool eof;
    int status = -1;
    if (test_send_all(fd, req, strlen(req)) == 0 &&
        test_recv(fd, out, cap, timeout_ms, &eof, whole_response) > 12 && !strncmp(out, "HTTP/1.1 ", 9))
        status = atoi(out + 9);
    close(fd);
    return status;
}

static const char *body_of(const char *resp)
{
    const char *b = strstr(resp, "\r\n\r\n");
    return b ? b + 4 : "";
}

static uint16_t free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof a;
    bind(fd, (struct sockaddr *)&a, sizeof a);
    getsockname(fd, (struct sockaddr *)&a, &len);
    close(fd);
    return ntohs(a.sin_port);
}

/* ---- the proxy process ------------------------------------------------------------------ */

struct child {
    pid_t pid;
    char log[300];
};

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

static int start_proxy(struct child *ch, const char *node, const char *token, const char *cert_dir)
{
    char url[64], token_file[300];
    snprintf(url, sizeof url, "http://127.0.0.1:%u", port);
    snprintf(token_file, sizeof token_file, "%s/%s.token", tmpdir, node);
    write_file(token_file, token);
    snprintf(ch->log, sizeof ch->log, "%s/%s.log", tmpdir, node);
    ch->pid = fork();
    if (ch->pid < 0)
        return -1;
    if (ch->pid == 0) {
        int fd = open(ch->log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(fd, 1);
        dup2(fd, 2);
        execl(proxy_bin, proxy_bin, "--control", url, "--node", node, "--token-file", token_file, "--cert-dir",
              cert_dir, "--workers", "1", (char *)NULL);
        _exit(127);
    }
    return 0;
}

/* Waits up to timeout_ms for the child to exit; its status, or -1 if still running. */
static int wait_exit(struct child *ch, int timeout_ms)
{
    uint64_t end = now_ms() + (uint64_t)timeout_ms;
    int st;
    do {
        pid_t r = waitpid(ch->pid, &st, WNOHANG);
        if (r == ch->pid) {
            ch->pid = 0;
            return st;
        }
        usleep(20000);
    } while (now_ms() < end);
    return -1;
}

static void stop_proxy(struct child *ch)
{
    if (ch->pid <= 0)
        return;
    kill(ch->pid, SIGTERM);
    if (wait_exit(ch, 5000) < 0) {
        kill(ch->pid, SIGKILL);
        waitpid(ch->pid, NULL, 0);
        ch->pid = 0;
    }
}

static void dump_log(const struct child *ch)
{
    FILE *f = fopen(ch->log, "r");
    char line[1024];
    fprintf(stderr, "---- %s\n", ch->log);
    while (f && fgets(line, sizeof line, f))
        fputs(line, stderr);
    if (f)
        fclose(f);
}

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    char *buf = calloc(1, 1 << 16);
    if (buf)
        fread(buf, 1, (1 << 16) - 1, f);
    fclose(f);
    return buf;
}

/* Polls GET / on the proxy's listener until the body contains want. */
static bool serves(uint16_t lport, const char *want, int timeout_ms)
{
    uint64_t end = now_ms() + (uint64_t)timeout_ms;
    char resp[4096];
    do {
        if (http(lport, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", resp, sizeof resp, 1000) == 200 &&
            strstr(body_of(resp), want))
            return true;
        usleep(20000);
    } while (now_ms() < end);
    return false;
}

static char *gateway_config(const char *version, uint16_t lport, const char *body)
{
    char *s = malloc(1024);
    snprintf(s, 1024,
             "{\"version\": \"%s\", \"listeners\": [{\"name\": \"http\", \"address\": \"127.0.0.1:%u\"}],"
             " \"routes\": [{\"name\": \"hello\", \"prefix\": \"/\", \"direct_response\": {\"status\": 200, \"body\": \"%s\"}}]}",
             version, lport, body);
    return s;
}

static X509 *load_cert(const char *path)
{
    FILE *f = fopen(path, "r");
    X509 *x = f ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;
    if (f)
        fclose(f);
    return x;
}

static void check_cert_files(const char *dir)
{
    char p[400];
    snprintf(p, sizeof p, "%s/cert.pem", dir);
    X509 *leaf = load_cert(p);
    snprintf(p, sizeof p, "%s/ca.pem", dir);
    X509 *root = load_cert(p);
    CHECK(leaf && root);
    if (!leaf || !root) {
        X509_free(leaf);
        X509_free(root);
        return;
    }
    X509 *bundle = load_cert(ca_bundle_path(ca));
    CHECK(bundle && X509_cmp(root, bundle) == 0);
    X509_free(bundle);
    X509_STORE *st = X509_STORE_new();
    X509_STORE_add_cert(st, root);
    X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    X509_STORE_CTX_init(ctx, st, leaf, NULL);
    CHECK_INT(X509_verify_cert(ctx), 1);
    X509_STORE_CTX_free(ctx);
    X509_STORE_free(st);
    GENERAL_NAMES *g = X509_get_ext_d2i(leaf, NID_subject_alt_name, NULL, NULL);
    bool found = false;
    for (int i = 0; g && i < sk_GENERAL_NAME_num(g); i++) {
        GENERAL_NAME *gn = sk_GENERAL_NAME_value(g, i);
        if (gn->type == GEN_URI && (size_t)gn->d.uniformResourceIdentifier->length == strlen(SPIFFE) &&
            !memcmp(gn->d.uniformResourceIdentifier->data, SPIFFE, strlen(SPIFFE)))
            found = true;
    }
    CHECK(found);
    GENERAL_NAMES_free(g);
    snprintf(p, sizeof p, "%s/key.pem", dir);
    struct stat sb;
    CHECK_INT(stat(p, &sb), 0);
    CHECK_INT(sb.st_mode & 0777, 0600);
    FILE *f = fopen(p, "r");
    EVP_PKEY *k = f ? PEM_read_PrivateKey(f, NULL, NULL, NULL) : NULL;
    if (f)
        fclose(f);
    CHECK(k && X509_check_private_key(leaf, k) == 1);
    EVP_PKEY_free(k);
    X509_free(leaf);
    X509_free(root);
}

/* ---- tests --------------------------------------------------------------------------- */

static void test_proxy_end_to_end(void)
{
    uint16_t lport = free_port();
    char *v1 = gateway_config("v1", lport, "hello v1"), *v2 = gateway_config("v2", lport, "hello v2");
    char *v3 = gateway_config("v3", free_port(), "moved"), *v4 = gateway_config("v4", lport, "hello v4");
    CHECK_INT(set_config("p1", "v1", v1), 0);
    char dir[300];
    snprintf(dir, sizeof dir, "%s/p1-certs", tmpdir);
    struct child ch = { 0 };
    CHECK_INT(start_proxy(&ch, "p1", TOKEN "\n", dir), 0);
    bool ok = serves(lport, "hello v1", 20000);
    CHECK(ok);
    if (ok) {
        check_cert_files(dir);
        /* A new version: served within 2 s. */
        uint64_t t0 = now_ms();
        CHECK_INT(set_config("p1", "v2", v2), 0);
        CHECK(serves(lport, "hello v2", 2000));
        fprintf(stderr, "config v2 served after %llu ms\n", (unsigned long long)(now_ms() - t0));
        /* The proxy acknowledges v2 by polling with it. */
        char a[64] = "";
        for (uint64_t end = now_ms() + 2000; now_ms() < end && strcmp(a, "v2"); usleep(20000))
            acked("p1", a);
        CHECK_STR(a, "v2");
        /* A listener change is refused (the old config stays) and the proxy keeps polling. */
        CHECK_INT(set_config("p1", "v3", v3), 0);
        usleep(500000);
        CHECK(serves(lport, "hello v2", 1000));
        CHECK_INT(set_config("p1", "v4", v4), 0);
        CHECK(serves(lport, "hello v4", 2000));
        char *log = read_file(ch.log);
        CHECK(log && strstr(log, "listeners changed"));
        free(log);
        /* Same version again: nothing is pushed (the proxy still serves v4). */
        CHECK_INT(set_config("p1", "v4", v4), 0);
        CHECK(serves(lport, "hello v4", 1000));
    }
    CHECK(wait_exit(&ch, 0) < 0); /* still running */
    stop_proxy(&ch);
    if (check_failures)
        dump_log(&ch);
    free(v1);
    free(v2);
    free(v3);
    free(v4);
}

static void test_certificate_renewal(void)
{
    uint16_t lport = free_port();
    char *cfg = gateway_config("r1", lport, "renewing");
    CHECK_INT(set_config("p2", "r1", cfg), 0);
    char dir[300], cert[400];
    snprintf(dir, sizeof dir, "%s/p2-certs", tmpdir);
    snprintf(cert, sizeof cert, "%s/cert.pem", dir);
    struct child ch = { 0 };
    CHECK_INT(start_proxy(&ch, "p2", "token-p2", dir), 0);
    CHECK(serves(lport, "renewing", 20000));
    char *first = read_file(cert);
    CHECK(first != NULL);
    /* 4 s certificates are renewed after ~2 s: a new file, still the CA's. */
    bool changed = false;
    for (uint64_t end = now_ms() + 5000; first && now_ms() < end && !changed; usleep(100000)) {
        char *now = read_file(cert);
        changed = now && strstr(now, "END CERTIFICATE") && strcmp(now, first) != 0;
        free(now);
    }
    CHECK(changed);
    check_cert_files(dir);
    CHECK(serves(lport, "renewing", 1000));
    char *log = read_file(ch.log);
    CHECK(log && strstr(log, "config reloaded")); /* the renewal re-applied the config */
    free(log);
    free(first);
    stop_proxy(&ch);
    if (check_failures)
        dump_log(&ch);
    free(cfg);
}

static void test_wrong_token_exits(void)
{
    char dir[300];
    snprintf(dir, sizeof dir, "%s/bad-certs", tmpdir);
    struct child ch = { 0 };
    CHECK_INT(start_proxy(&ch, "p1", "not-the-token", dir), 0);
    int st = wait_exit(&ch, 10000);
    CHECK(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 1);
    char *log = read_file(ch.log);
    CHECK(log && strstr(log, "strata-proxy: control plane http://127.0.0.1:") && strstr(log, "401 unauthenticated"));
    if (log && !strstr(log, "401"))
        fprintf(stderr, "log: %s\n", log);
    free(log);
    stop_proxy(&ch);
    /* An unknown node: 404, also fatal at start. */
    CHECK_INT(start_proxy(&ch, "nobody", "x", dir), 0);
    st = wait_exit(&ch, 10000);
    CHECK(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 1);
    stop_proxy(&ch);
}

static char *make_csr(void)
{
    EVP_PKEY *k = EVP_EC_gen("P-256");
    X509_REQ *req = X509_REQ_new();
    X509_REQ_set_pubkey(req, k);
    X509_REQ_sign(req, k, EVP_sha256());
    BIO *b = BIO_new(BIO_s_mem());
    PEM_write_bio_X509_REQ(b, req);
    char *p;
    long n = BIO_get_mem_data(b, &p);
    char *s = strndup(p, (size_t)n);
    BIO_free(b);
    X509_REQ_free(req);
    EVP_PKEY_free(k);
    return s;
}

static void test_endpoints(void)
{
    char req[4096], resp[16384];
    CHECK_INT(set_config("p1", "e1", "{\"version\": \"e1\"}"), 0);
    /* No token, a wrong one, an unknown proxy. */
    CHECK_INT(http(port, "GET /v1/proxies/p1/config HTTP/1.1\r\nHost: x\r\n\r\n", resp, sizeof resp, 2000), 401);
    CHECK(strstr(resp, "\"code\":\"unauthenticated\""));
    CHECK_INT(http(port, "GET /v1/proxies/p1/config HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " TOKEN "x\r\n\r\n",
                   resp, sizeof resp, 2000), 401);
    CHECK_INT(http(port, "GET /v1/proxies/zz/config HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " TOKEN "\r\n\r\n",
                   resp, sizeof resp, 2000), 404);
    /* No version: the config at once, with its version. */
    CHECK_INT(http(port, "GET /v1/proxies/p1/config HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " TOKEN "\r\n\r\n",
                   resp, sizeof resp, 2000), 200);
    CHECK(strcasestr(resp, "x-strata-config-version: e1\r\n"));
    CHECK_STR(body_of(resp), "{\"version\": \"e1\"}");
    /* A stale version: at once. */
    CHECK_INT(http(port, "GET /v1/proxies/p1/config?version=old&wait=5 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                         TOKEN "\r\n\r\n", resp, sizeof resp, 2000), 200);
    /* The current one: held for wait=1, then 304. */
    uint64_t t0 = now_ms();
    CHECK_INT(http(port, "GET /v1/proxies/p1/config?version=e1&wait=1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                         TOKEN "\r\n\r\n", resp, sizeof resp, 3000), 304);
    uint64_t held = now_ms() - t0;
    CHECK(held >= 900 && held < 2500);
    char a[64];
    acked("p1", a);
    CHECK_STR(a, "e1");
    CHECK_INT(http(port, "GET /v1/proxies/p1/config?version=e1&wait=301 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                         TOKEN "\r\n\r\n", resp, sizeof resp, 2000), 400);
    /* A held poll answered by a new version; another whose client leaves is forgotten. */
    int gone = test_connect(port);
    const char *poll = "GET /v1/proxies/p1/config?version=e1&wait=30 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                       TOKEN "\r\n\r\n";
    CHECK_INT(test_send_all(gone, poll, strlen(poll)), 0);
    int held_fd = test_connect(port);
    CHECK_INT(test_send_all(held_fd, poll, strlen(poll)), 0);
    usleep(200000);
    close(gone);
    usleep(200000);
    t0 = now_ms();
    CHECK_INT(set_config("p1", "e2", "{\"version\": \"e2\"}"), 0);
    bool eof;
    CHECK(test_recv(held_fd, resp, sizeof resp, 2000, &eof, whole_response) > 0);
    CHECK(!strncmp(resp, "HTTP/1.1 200", 12));
    CHECK_STR(body_of(resp), "{\"version\": \"e2\"}");
    CHECK(now_ms() - t0 < 500);
    close(held_fd);
    CHECK_INT(set_config("nobody", "x", "{}"), -ENOENT);

    /* Certificates: garbage, no token, a good CSR. */
    const char *garbage = "this is not a CSR";
    snprintf(req, sizeof req, "POST /v1/proxies/p1/certificate HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " TOKEN
                              "\r\nContent-Length: %zu\r\n\r\n%s", strlen(garbage), garbage);
    CHECK_INT(http(port, req, resp, sizeof resp, 2000), 400);
    CHECK(strstr(resp, "\"code\":\"invalid_csr\""));
    char *csr = make_csr();
    snprintf(req, sizeof req, "POST /v1/proxies/p1/certificate HTTP/1.1\r\nHost: x\r\nContent-Length: %zu\r\n\r\n%s",
             strlen(csr), csr);
    CHECK_INT(http(port, req, resp, sizeof resp, 2000), 401);
    snprintf(req, sizeof req, "POST /v1/proxies/p1/certificate HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " TOKEN
                              "\r\nContent-Length: %zu\r\n\r\n%s", strlen(csr), csr);
    CHECK_INT(http(port, req, resp, sizeof resp, 2000), 200);
    json_error_t je;
    json_t *doc = json_loads(body_of(resp), 0, &je);
    CHECK(doc && json_is_string(json_object_get(doc, "certificate")));
    CHECK(doc && json_is_string(json_object_get(doc, "ca")) &&
          !strcmp(json_string_value(json_object_get(doc, "ca")), ca_bundle_pem(ca)));
    json_int_t na = json_integer_value(json_object_get(doc, "not_after"));
    CHECK(na > time(NULL) + 23 * 3600 && na <= time(NULL) + 24 * 3600 + 5);
    json_decref(doc);
    free(csr);
}

static void remove_cb(void *arg)
{
    xds_remove_proxy(xds, arg);
}
static void add_gone_cb(void *arg)
{
    const char *dns[] = { "localhost" };
    struct ca_names names = { .spiffe_id = SPIFFE, .dns = dns, .ndns = 1 };
    *(int *)arg = xds_add_proxy(xds, "gone", "tok-gone", &names);
}

static void test_remove_answers_polls(void)
{
    int rc = -1;
    on_loop(add_gone_cb, &rc);
    CHECK_INT(rc, 0);
    int fd = test_connect(port);
    const char *poll = "GET /v1/proxies/gone/config?wait=30 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tok-gone\r\n\r\n";
    CHECK_INT(test_send_all(fd, poll, strlen(poll)), 0);
    usleep(200000);
    on_loop(remove_cb, "gone");
    char resp[4096];
    bool eof;
    CHECK(test_recv(fd, resp, sizeof resp, 2000, &eof, whole_response) > 0);
    CHECK(!strncmp(resp, "HTTP/1.1 404", 12));
    close(fd);
    CHECK_INT(http(port, "GET /v1/proxies/gone/config HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tok-gone\r\n\r\n",
                   resp, sizeof resp, 2000), 404);
}

static void rm_rf(const char *path)
{
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", path);
}

int main(void)
{
    const char *bd = getenv("STRATA_BUILD_DIR");
    if (bd) {
        snprintf(proxy_bin, sizeof proxy_bin, "%s/strata-proxy", bd);
    } else {
        ssize_t n = readlink("/proc/self/exe", proxy_bin, sizeof proxy_bin - 20);
        proxy_bin[n > 0 ? n : 0] = '\0';
        char *slash = strrchr(proxy_bin, '/');
        snprintf(slash ? slash + 1 : proxy_bin, 20, "strata-proxy");
    }
    if (access(proxy_bin, X_OK) < 0) {
        fprintf(stderr, "%s: not built\n", proxy_bin);
        return 1;
    }
    snprintf(tmpdir, sizeof tmpdir, "/tmp/strata-test-xds-XXXXXX");
    if (!mkdtemp(tmpdir))
        return 1;
    signal(SIGPIPE, SIG_IGN);
    if (start_service() < 0) {
        fprintf(stderr, "cannot start the service\n");
        rm_rf(tmpdir);
        return 1;
    }
    RUN(test_endpoints);
    RUN(test_remove_answers_polls);
    RUN(test_proxy_end_to_end);
    RUN(test_certificate_renewal);
    RUN(test_wrong_token_exits);
    service_shutdown(svc);
    pthread_join(svc_thread, NULL);
    service_free(svc);
    xds_free(xds);
    ca_free(ca);
    rm_rf(tmpdir);
    return check_done();
}
