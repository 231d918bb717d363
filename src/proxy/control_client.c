/* control_client.c — certificates by CSR and configs by long-poll from
 * strata-control, on the proxy's main loop with core/http1_client.
 *
 * Two independent flows, each with its own call, timer and backoff:
 *   cert:  POST the CSR → write the files → timer at half the lifetime;
 *   poll:  GET config?version=V&wait=30 → apply → next poll at once.
 * The bootstrap runs both once, in order (the config may name the
 * certificate files, and the proxy checks them when it loads it). */
#include "proxy/control_client.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "core/fileio.h"
#include "core/http1_client.h"
#include "core/json.h"
#include "core/log.h"
#include "core/metrics.h"

#define CC_WAIT_S 30
/* The long-poll is held up to CC_WAIT_S by the server: the request may take that plus a margin. */
#define CC_POLL_TIMEOUT_MS ((CC_WAIT_S + 10) * 1000)
#define CC_CERT_TIMEOUT_MS 10000
#define CC_BACKOFF_MIN_MS 1000
#define CC_BACKOFF_MAX_MS 30000
/* First start: give up once the control plane was unreachable this long. */
#define CC_BOOT_DEADLINE_MS 30000
#define CC_MAX_TOKEN 4096

enum cc_phase { CC_BOOT, CC_BOOT_DONE, CC_RUNNING };

struct control_client {
    struct loop *loop;
    struct http1_client *http;
    struct net_addr addr;
    char host[300];
    char *url, *node, *bearer, *key_path, *cert_path, *ca_path;

    enum cc_phase phase;
    int boot_rc;
    char boot_err[512];
    uint64_t boot_deadline;
    char *boot_json;
    size_t boot_len;

    /* poll */
    struct http1_client_call *poll_call;
    struct loop_timer poll_timer;
    uint32_t poll_backoff_ms;
    char *version;                 /* last received */
    char *applied_version, *applied_json; /* the config in force, re-applied after a renewal */
    size_t applied_len;

    /* certificate */
    struct http1_client_call *cert_call;
    struct loop_timer cert_timer;
    uint32_t cert_backoff_ms;
    EVP_PKEY *key;                 /* the key of the CSR in flight */
    struct metrics_gauge *m_expiry; /* strata_proxy_certificate_expiry_timestamp_seconds */

    control_apply_fn apply;
    control_certs_fn certs;
    void *arg;
};

static void poll_send(struct control_client *c);
static void cert_send(struct control_client *c);



static uint32_t next_backoff(uint32_t *b)
{
    uint32_t now = *b ? *b : CC_BACKOFF_MIN_MS;
    *b = now >= CC_BACKOFF_MAX_MS / 2 ? CC_BACKOFF_MAX_MS : now * 2;
    return now;
}

/* "401 unauthenticated: the bearer token is not this proxy's", from the
 * standard error body when there is one. */
static void describe_status(const struct http1_client_response *resp, char *out, size_t outsz)
{
    json_t *doc = json_loadb(resp->body.p ? resp->body.p : "", resp->body.n, 0, NULL);
    json_t *e = json_object_get(doc, "error");
    const char *code = json_string_value(json_object_get(e, "code"));
    const char *msg = json_string_value(json_object_get(e, "message"));
    if (code && msg)
        snprintf(out, outsz, "%d %s: %s", resp->status, code, msg);
    else
        snprintf(out, outsz, "HTTP %d", resp->status);
    json_decref(doc);
}

/* During the bootstrap a failure ends it (fatal) or, for an unreachable
 * control plane, only once the deadline passed. */
static bool boot_fail(struct control_client *c, bool fatal, const char *what, const char *why)
{
    if (c->phase != CC_BOOT)
        return false;
    if (!fatal && loop_now_ms(c->loop) < c->boot_deadline)
        return false;
    snprintf(c->boot_err, sizeof c->boot_err, "control plane %s: %s: %s%s", c->url, what, why,
             fatal ? "" : " (unreachable for 30 s)");
    c->boot_rc = fatal ? -EACCES : -ETIMEDOUT;
    c->phase = CC_BOOT_DONE;
    return true;
}

static int cc_send(struct control_client *c, const char *method, const char *target, struct str body,
                uint32_t timeout_ms, http1_client_cb cb, struct http1_client_call **call)
{
    const struct http1_header h[] = {
        { STR_LIT("Authorization"), str_from_cstr(c->bearer) },
        { STR_LIT("Content-Type"), STR_LIT("application/pkcs10") },
    };
    struct http1_client_request req = { .addr = c->addr, .method = str_from_cstr(method),
                                        .target = str_from_cstr(target), .host = str_from_cstr(c->host),
                                        .headers = h, .nheaders = body.n ? 2 : 1, .body = body,
                                        .timeout_ms = timeout_ms };
    return http1_client_send(c->http, &req, cb, c, call);
}

/* ---- certificate ------------------------------------------------------------------- */

static char *make_csr(EVP_PKEY *k, const char *node)
{
    X509_REQ *req = X509_REQ_new();
    X509_NAME *n = X509_NAME_new();
    BIO *b = BIO_new(BIO_s_mem());
    char *out = NULL, *p;
    if (req && n && b &&
        X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_UTF8, (const unsigned char *)node, -1, -1, 0) == 1 &&
        X509_REQ_set_subject_name(req, n) == 1 && X509_REQ_set_pubkey(req, k) == 1 &&
        X509_REQ_sign(req, k, EVP_sha256()) > 0 && PEM_write_bio_X509_REQ(b, req) == 1) {
        long len = BIO_get_mem_data(b, &p);
        out = len > 0 ? strndup(p, (size_t)len) : NULL;
    }
    BIO_free(b);
    X509_NAME_free(n);
    X509_REQ_free(req);
    return out;
}

static void cert_retry(struct control_client *c, const char *why)
{
    uint32_t ms = next_backoff(&c->cert_backoff_ms);
    log_warn("control plane: certificate request failed; retrying", LOG_STR("url", c->url),
             LOG_STR("error", why), LOG_UINT("retry_ms", ms));
    loop_timer_start(&c->cert_timer, ms);
}

/* Writes key, certificate and bundle; 0 or -errno (err names the file). */
static int write_files(struct control_client *c, const char *cert, const char *ca, char *err, size_t errsz)
{
    BIO *b = BIO_new(BIO_s_mem());
    char *p = NULL;
    long len = b && PEM_write_bio_PrivateKey(b, c->key, NULL, NULL, 0, NULL, NULL) == 1 ? BIO_get_mem_data(b, &p) : -1;
    int rc = len > 0 ? file_write_atomic(c->key_path, p, (size_t)len, 0600) : -ENOMEM;
    const char *failed = c->key_path;
    if (rc == 0 && (rc = file_write_atomic(c->cert_path, cert, strlen(cert), 0644)) < 0)
        failed = c->cert_path;
    if (rc == 0 && (rc = file_write_atomic(c->ca_path, ca, strlen(ca), 0644)) < 0)
        failed = c->ca_path;
    BIO_free(b); /* frees p, the key's PEM text */
    if (rc < 0)
        snprintf(err, errsz, "%s: cannot write: %s", failed, strerror(-rc));
    return rc;
}

static void renewed(struct control_client *c)
{
    if (c->applied_json && c->apply(c->applied_version, str_make(c->applied_json, c->applied_len), c->arg) == 0)
        return;
    if (c->certs)
        c->certs(c->arg);
}

/* A failure worth retrying (no answer, or a 5xx): true, with why filled. */
static bool transient_failure(int err, const struct http1_client_response *resp, char *why, size_t n)
{
    if (!err && resp->status < 500)
        return false;
    if (err)
        snprintf(why, n, "%s", strerror(-err));
    else
        describe_status(resp, why, n);
    return true;
}

static void cert_done(int err, const struct http1_client_response *resp, void *arg)
{
    struct control_client *c = arg;
    c->cert_call = NULL;
    char why[400];
    if (transient_failure(err, resp, why, sizeof why)) {
        if (!boot_fail(c, false, "POST certificate", why))
            cert_retry(c, why);
        return;
    }
    if (resp->status != 200) {
        describe_status(resp, why, sizeof why);
        if (!boot_fail(c, true, "POST certificate", why))
            cert_retry(c, why);
        return;
    }
    json_t *doc = json_loadb(resp->body.p, resp->body.n, 0, NULL);
    const char *cert = json_string_value(json_object_get(doc, "certificate"));
    const char *ca = json_string_value(json_object_get(doc, "ca"));
    json_int_t not_after = json_integer_value(json_object_get(doc, "not_after"));
    int rc = cert && ca && not_after > 0 ? write_files(c, cert, ca, why, sizeof why) : -EPROTO;
    if (rc == -EPROTO)
        snprintf(why, sizeof why, "the answer lacks certificate, ca or not_after");
    json_decref(doc);
    if (rc < 0) {
        if (!boot_fail(c, true, "POST certificate", why))
            cert_retry(c, why);
        return;
    }
    EVP_PKEY_free(c->key);
    c->key = NULL;
    c->cert_backoff_ms = 0;
    if (!c->m_expiry) {
        struct metrics_family *f;
        if (metrics_register_gauge(metrics_default(), "strata_proxy_certificate_expiry_timestamp_seconds",
                                   "When the workload certificate in force expires (Unix time).", NULL, &f) == 0)
            c->m_expiry = metrics_gauge_withv(f, NULL, 0);
    }
    metrics_gauge_set(c->m_expiry, (double)not_after);
    int64_t now = (int64_t)time(NULL);
    int64_t half = not_after > now ? (not_after - now) / 2 : 0;
    uint64_t renew_ms = half > 1 ? (uint64_t)half * 1000 : 1000;
    loop_timer_start(&c->cert_timer, renew_ms);
    log_info("workload certificate written", LOG_STR("cert_file", c->cert_path), LOG_INT("not_after", not_after),
             LOG_UINT("renew_in_s", renew_ms / 1000));
    if (c->phase == CC_BOOT)
        poll_send(c); /* the first config, now that the files it names exist */
    else
        renewed(c);
}

static void cert_send(struct control_client *c)
{
    if (!c->key)
        c->key = EVP_EC_gen("P-256");
    char *csr = c->key ? make_csr(c->key, c->node) : NULL;
    char target[300];
    snprintf(target, sizeof target, "/v1/proxies/%s/certificate", c->node);
    if (!csr || cc_send(c, "POST", target, str_from_cstr(csr), CC_CERT_TIMEOUT_MS, cert_done, &c->cert_call) < 0) {
        if (!boot_fail(c, true, "POST certificate", "out of memory"))
            cert_retry(c, "out of memory");
    }
    free(csr);
}

static void cert_timer_cb(struct loop_timer *t)
{
    cert_send(t->data);
}

/* ---- config ----------------------------------------------------------------------- */

static void poll_retry(struct control_client *c, const char *why)
{
    uint32_t ms = next_backoff(&c->poll_backoff_ms);
    log_warn("control plane: config poll failed; the config in force stays, retrying", LOG_STR("url", c->url),
             LOG_STR("error", why), LOG_UINT("retry_ms", ms));
    loop_timer_start(&c->poll_timer, ms);
}

static int set_string(char **dst, const char *p, size_t n)
{
    char *s = malloc(n + 1);
    if (!s)
        return -ENOMEM;
    memcpy(s, p, n);
    s[n] = '\0';
    free(*dst);
    *dst = s;
    return 0;
}

static void got_config(struct control_client *c, struct str version, struct str body)
{
    char *v = NULL;
    if (set_string(&v, version.p ? version.p : "", version.n) < 0) {
        poll_retry(c, "out of memory");
        return;
    }
    if (c->phase == CC_BOOT) {
        if (set_string(&c->boot_json, body.p ? body.p : "", body.n) < 0) {
            free(v);
            boot_fail(c, true, "GET config", "out of memory");
            return;
        }
        c->boot_len = body.n;
        free(c->version);
        c->version = v;
        c->phase = CC_BOOT_DONE;
        return;
    }
    /* Poll next with what we received, applied or not: a refused document
     * is not sent again until the control plane changes it. */
    free(c->version);
    c->version = v;
    if (c->apply(v, body, c->arg) == 0) {
        char *av = strdup(v);
        if (av && set_string(&c->applied_json, body.p ? body.p : "", body.n) == 0) {
            free(c->applied_version);
            c->applied_version = av;
            c->applied_len = body.n;
        } else {
            free(av);
        }
    }
    poll_send(c);
}

static void poll_done(int err, const struct http1_client_response *resp, void *arg)
{
    struct control_client *c = arg;
    c->poll_call = NULL;
    char why[400];
    if (transient_failure(err, resp, why, sizeof why)) {
        if (!boot_fail(c, false, "GET config", why))
            poll_retry(c, why);
        return;
    }
    c->poll_backoff_ms = 0;
    if (resp->status == 304) {
        poll_send(c);
        return;
    }
    if (resp->status != 200) {
        describe_status(resp, why, sizeof why);
        if (!boot_fail(c, true, "GET config", why))
            poll_retry(c, why);
        return;
    }
    const struct http1_header *h = http1_find_header(resp->headers, resp->nheaders, STR_LIT("x-strata-config-version"));
    got_config(c, h ? h->value : STR_NULL, resp->body);
}

static void poll_send(struct control_client *c)
{
    char target[600];
    int n = snprintf(target, sizeof target, "/v1/proxies/%s/config?wait=%d", c->node, CC_WAIT_S);
    /* The version goes back percent-encoded: anything outside unreserved characters is escaped. */
    if (c->version && c->version[0]) {
        n += snprintf(target + n, sizeof target - (size_t)n, "&version=");
        for (const unsigned char *p = (const unsigned char *)c->version; *p && n < (int)sizeof target - 4; p++) {
            bool plain = (*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                         *p == '-' || *p == '.' || *p == '_' || *p == '~';
            n += plain ? snprintf(target + n, sizeof target - (size_t)n, "%c", *p)
                       : snprintf(target + n, sizeof target - (size_t)n, "%%%02X", *p);
        }
    }
    if (cc_send(c, "GET", target, STR_NULL, CC_POLL_TIMEOUT_MS, poll_done, &c->poll_call) < 0 &&
        !boot_fail(c, true, "GET config", "out of memory"))
        poll_retry(c, "out of memory");
}

static void poll_timer_cb(struct loop_timer *t)
{
    poll_send(t->data);
}

/* ---- life cycle ------------------------------------------------------------------------ */

static int read_token(const char *path, char **out, char *err, size_t errsz)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errsz, "--token-file %s: %s", path, strerror(errno));
        return -EINVAL;
    }
    char buf[CC_MAX_TOKEN + 2];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    struct str t = str_trim_ows(str_make(buf, n));
    while (t.n && (t.p[t.n - 1] == '\n' || t.p[t.n - 1] == '\r'))
        t = str_trim_ows(str_make(t.p, t.n - 1));
    while (t.n && (t.p[0] == '\n' || t.p[0] == '\r'))
        t = str_trim_ows(str_make(t.p + 1, t.n - 1));
    if (n > CC_MAX_TOKEN || !t.n) {
        snprintf(err, errsz, "--token-file %s: %s", path, t.n ? "longer than 4096 bytes" : "empty");
        return -EINVAL;
    }
    for (size_t i = 0; i < t.n; i++)
        if ((unsigned char)t.p[i] < 0x21 || (unsigned char)t.p[i] > 0x7e) {
            snprintf(err, errsz, "--token-file %s: the token has a space or control character inside", path);
            return -EINVAL;
        }
    *out = malloc(t.n + 8);
    if (!*out) {
        snprintf(err, errsz, "out of memory");
        return -ENOMEM;
    }
    snprintf(*out, t.n + 8, "Bearer %.*s", STR_FMT(t));
    OPENSSL_cleanse(buf, sizeof buf);
    return 0;
}

static bool node_is_valid(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 128)
        return false;
    for (; *s; s++)
        if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || *s == '-' ||
              *s == '.' || *s == '_'))
            return false;
    return true;
}

static int parse_url(struct control_client *c, const char *url, char *err, size_t errsz)
{
    struct http1_url u;
    if (http1_url_parse(str_from_cstr(url), &u) < 0 || u.is_tls || !(u.path.n == 1 && u.path.p[0] == '/') ||
        net_addr_from_host(u.host, u.port, &c->addr) < 0) {
        snprintf(err, errsz, "--control: expected http://HOST:PORT with a numeric host and no path, got \"%s\"", url);
        return -EINVAL;
    }
    net_addr_format(&c->addr, c->host, sizeof c->host);
    return 0;
}

int control_client_new(struct loop *l, const struct control_client_config *cfg, struct control_client **out,
                       char *err, size_t errsz)
{
    *out = NULL;
    if (!cfg->node || !node_is_valid(cfg->node)) {
        snprintf(err, errsz, "--node: expected 1..128 of [A-Za-z0-9._-], got \"%s\"", cfg->node ? cfg->node : "");
        return -EINVAL;
    }
    if (!cfg->cert_dir || !cfg->token_file) {
        snprintf(err, errsz, "--control needs --node, --token-file and --cert-dir");
        return -EINVAL;
    }
    struct control_client *c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, errsz, "out of memory");
        return -ENOMEM;
    }
    c->loop = l;
    int rc = parse_url(c, cfg->url, err, errsz);
    if (rc == 0)
        rc = read_token(cfg->token_file, &c->bearer, err, errsz);
    if (rc == 0 && mkdir(cfg->cert_dir, 0700) < 0 && errno != EEXIST) {
        snprintf(err, errsz, "--cert-dir %s: %s", cfg->cert_dir, strerror(errno));
        rc = -EINVAL;
    }
    if (rc == 0 && (!(c->url = strdup(cfg->url)) || !(c->node = strdup(cfg->node)) ||
                    !(c->key_path = file_path_join(cfg->cert_dir, "key.pem")) ||
                    !(c->cert_path = file_path_join(cfg->cert_dir, "cert.pem")) ||
                    !(c->ca_path = file_path_join(cfg->cert_dir, "ca.pem")) ||
                    !(c->http = http1_client_new(l, &(struct http1_client_config){ 0 })))) {
        snprintf(err, errsz, "out of memory");
        rc = -ENOMEM;
    }
    if (rc < 0) {
        control_client_free(c);
        return rc;
    }
    loop_timer_init(l, &c->poll_timer, poll_timer_cb, c);
    loop_timer_init(l, &c->cert_timer, cert_timer_cb, c);
    *out = c;
    return 0;
}

int control_client_bootstrap(struct control_client *c, char **json, size_t *len, char *err, size_t errsz)
{
    c->phase = CC_BOOT;
    loop_update_time(c->loop);
    c->boot_deadline = loop_now_ms(c->loop) + CC_BOOT_DEADLINE_MS;
    cert_send(c);
    while (c->phase == CC_BOOT)
        loop_run_once(c->loop, -1);
    loop_timer_stop(&c->poll_timer);
    if (c->boot_rc < 0) {
        snprintf(err, errsz, "%s", c->boot_err);
        return c->boot_rc;
    }
    /* The bootstrap config is the one in force once the caller starts with it. */
    c->applied_version = strdup(c->version ? c->version : "");
    c->applied_json = c->boot_json;
    c->applied_len = c->boot_len;
    *json = strndup(c->boot_json, c->boot_len);
    c->boot_json = NULL;
    *len = c->boot_len;
    if (!*json || !c->applied_version) {
        snprintf(err, errsz, "out of memory");
        return -ENOMEM;
    }
    return 0;
}

void control_client_start(struct control_client *c, control_apply_fn apply, control_certs_fn certs, void *arg)
{
    c->apply = apply;
    c->certs = certs;
    c->arg = arg;
    c->phase = CC_RUNNING;
    poll_send(c);
}

const char *control_client_version(const struct control_client *c)
{
    return c->version ? c->version : "";
}

void control_client_free(struct control_client *c)
{
    if (!c)
        return;
    if (c->poll_timer.loop)
        loop_timer_stop(&c->poll_timer);
    if (c->cert_timer.loop)
        loop_timer_stop(&c->cert_timer);
    http1_client_free(c->http); /* cancels the calls in flight */
    EVP_PKEY_free(c->key);
    if (c->bearer)
        OPENSSL_cleanse(c->bearer, strlen(c->bearer));
    free(c->bearer);
    free(c->url);
    free(c->node);
    free(c->key_path);
    free(c->cert_path);
    free(c->ca_path);
    free(c->version);
    free(c->applied_version);
    free(c->applied_json);
    free(c->boot_json);
    free(c);
}
