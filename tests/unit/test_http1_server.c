/* The HTTP/1.1 server and client over real loopback sockets: timeouts,
 * limits, async handlers, drain, keep-alive pools, client errors. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "core/http1_client.h"
#include "core/http1_server.h"
#include "core/net.h"
#include "core/tls.h"
#include "support/test_server.h"

#define SEND(fd, lit) test_send_all((fd), (lit), sizeof(lit) - 1)

static bool has_status_line_and_end(const char *p, size_t n) { return memmem(p, n, "\r\n\r\n", 4) != NULL; }

static void hello(struct http1_exchange *x, void *arg)
{
    (void)arg;
    if (str_eq(x->req.path, STR_LIT("/204"))) {
        http1_respond(x, 204, NULL, 0, STR_NULL);
        return;
    }
    if (str_eq(x->req.path, STR_LIT("/big"))) {
        struct buf b;
        buf_init(&b, 4 << 20);
        buf_reserve(&b, 1 << 20);
        memset(buf_wptr(&b), 'z', 1 << 20);
        buf_commit(&b, 1 << 20);
        http1_respond_buf(x, 200, NULL, 0, &b);
        buf_free(&b);
        return;
    }
    if (str_eq(x->req.path, STR_LIT("/error"))) {
        http1_respond_error(x, 422, "invalid_field", "quantity: \"must\" be 1..1000", "rid-1");
        return;
    }
    http1_respond(x, 200, NULL, 0, STR_LIT("hello"));
}

static void test_slowloris_gets_408(void)
{
    struct http1_server_config cfg = { .handler = hello, .header_timeout_ms = 300 };
    struct test_server ts;
    CHECK_INT(test_server_start(&ts, &cfg), 0);
    int fd = test_connect(ts.port);
    SEND(fd, "GET / HTTP/1.1\r\nHost: a\r\n");
    char in[4096];
    bool eof;
    size_t n = test_recv(fd, in, sizeof in, 3000, &eof, NULL);
    CHECK(n > 0 && strncmp(in, "HTTP/1.1 408 ", 13) == 0);
    CHECK(strstr(in, "\"code\":\"request_timeout\"") != NULL);
    CHECK(strstr(in, "Connection: close") != NULL);
    CHECK(eof);
    close(fd);
    test_server_stop(&ts);
}

static void test_idle_keepalive_closed(void)
{
    struct http1_server_config cfg = { .handler = hello, .idle_timeout_ms = 200 };
    struct test_server ts;
    CHECK_INT(test_server_start(&ts, &cfg), 0);
    int fd = test_connect(ts.port);
    SEND(fd, "GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    char in[4096];
    bool eof;
    size_t n = test_recv(fd, in, sizeof in, 3000, &eof, has_status_line_and_end);
    CHECK(n > 0 && strncmp(in, "HTTP/1.1 200 OK", 15) == 0);
    /* Nothing sent: after the idle timeout the server closes silently. */
    n += test_recv(fd, in + n, sizeof in - n, 3000, &eof, NULL);
    CHECK(eof);
    CHECK(n > 5 && memcmp(in + n - 5, "hello", 5) == 0); /* and nothing after the response */
    close(fd);
    test_server_stop(&ts);
}

static void test_head_204_and_error_body(void)
{
    struct http1_server_config cfg = { .handler = hello };
    struct test_server ts;
    CHECK_INT(test_server_start(&ts, &cfg), 0);
    int fd = test_connect(ts.port);
    char in[8192];
    bool eof;
    SEND(fd, "HEAD / HTTP/1.1\r\nHost: a\r\n\r\n");
    test_recv(fd, in, sizeof in, 3000, &eof, has_status_line_and_end);
    CHECK(strstr(in, "Content-Length: 5\r\n") != NULL);
    CHECK(strstr(in, "hello") == NULL);
    SEND(fd, "GET /204 HTTP/1.1\r\nHost: a\r\n\r\n");
    test_recv(fd, in, sizeof in, 3000, &eof, has_status_line_and_end);
    CHECK(strncmp(in, "HTTP/1.1 204 No Content\r\n", 25) == 0);
    CHECK(strstr(in, "Content-Length") == NULL);
    SEND(fd, "GET /error HTTP/1.0\r\n\r\n");
    size_t n = test_recv(fd, in, sizeof in, 3000, &eof, NULL);
    CHECK(n > 0 && strncmp(in, "HTTP/1.1 422 Unprocessable", 26) == 0);
    CHECK(strstr(in, "Content-Type: application/json\r\n") != NULL);
    CHECK(strstr(in, "{\"error\":{\"code\":\"invalid_field\",\"message\":\"quantity: \\\"must\\\" be 1..1000\","
                     "\"request_id\":\"rid-1\"}}") != NULL);
    CHECK(eof); /* HTTP/1.0 without keep-alive */
    close(fd);
    test_server_stop(&ts);
}

static void test_max_connections_waits_in_backlog(void)
{
    struct http1_server_config cfg = { .handler = hello, .max_connections = 1 };
    struct test_server ts;
    CHECK_INT(test_server_start(&ts, &cfg), 0);
    int a = test_connect(ts.port);
    char in[4096];
    bool eof;
    SEND(a, "GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    CHECK(test_recv(a, in, sizeof in, 3000, &eof, has_status_line_and_end) > 0);
    int b = test_connect(ts.port); /* completes in the kernel backlog */
    SEND(b, "GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    CHECK_INT(test_recv(b, in, sizeof in, 300, &eof, NULL), 0); /* not served while a is open */
    close(a);
    size_t n = test_recv(b, in, sizeof in, 3000, &eof, has_status_line_and_end);
    CHECK(n > 0 && strncmp(in, "HTTP/1.1 200", 12) == 0);
    close(b);
    test_server_stop(&ts);
}

static void test_large_response(void)
{
    struct http1_server_config cfg = { .handler = hello };
    struct test_server ts;
    CHECK_INT(test_server_start(&ts, &cfg), 0);
    int fd = test_connect(ts.port);
    SEND(fd, "GET /big HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    static char in[2 << 20];
    size_t total = 0;
    bool eof = false;
    while (!eof) {
        size_t n = test_recv(fd, in + total, sizeof in - total, 3000, &eof, NULL);
        if (!n && !eof)
            break;
        total += n;
    }
    char *body = memmem(in, total, "\r\n\r\n", 4);
    CHECK(body != NULL);
    if (body) {
        CHECK_INT(total - (size_t)(body + 4 - in), 1 << 20);
        CHECK(strstr(in, "Content-Length: 1048576\r\n") != NULL);
    }
    close(fd);
    test_server_stop(&ts);
}

/* ---- async handlers and graceful drain, single-threaded ----------------- */

struct drain_ctx {
    struct loop *loop;
    struct http1_server *server;
    struct http1_exchange *pending;
    struct loop_timer later;
    bool is_drained;
    int client_status;
    bool client_done;
};

static void answer_later(struct loop_timer *t)
{
    struct drain_ctx *d = t->data;
    http1_respond(d->pending, 200, NULL, 0, STR_LIT("late"));
    d->pending = NULL;
}

static void slow_handler(struct http1_exchange *x, void *arg)
{
    struct drain_ctx *d = arg;
    d->pending = x;
    loop_timer_start(&d->later, 100);
    /* A drain starts while this request is in flight. */
    http1_server_drain(d->server, NULL, NULL);
}

static void on_drained(void *arg) { ((struct drain_ctx *)arg)->is_drained = true; }

static void client_cb(int err, const struct http1_client_response *r, void *arg)
{
    struct drain_ctx *d = arg;
    d->client_done = true;
    d->client_status = err ? err : r->status;
    if (!err)
        CHECK_STRV(r->body, "late");
    if (!err) {
        const struct http1_header *h = http1_find_header(r->headers, r->nheaders, STR_LIT("Connection"));
        CHECK(h && str_eq_nocase(h->value, STR_LIT("close")));
    }
}

static void test_drain_finishes_in_flight(void)
{
    struct drain_ctx d = { 0 };
    d.loop = loop_new();
    struct http1_server_config cfg = { .handler = slow_handler, .handler_arg = &d };
    d.server = http1_server_new(d.loop, &cfg);
    loop_timer_init(d.loop, &d.later, answer_later, &d);
    struct net_addr a;
    int lfd;
    net_addr_parse(STR_LIT("127.0.0.1:0"), true, &a);
    net_listen(&a, NULL, &lfd);
    net_local_addr(lfd, &a);
    http1_server_listen_fd(d.server, lfd);
    struct http1_client *cl = http1_client_new(d.loop, NULL);
    struct http1_client_request req = { .addr = a, .method = STR_LIT("GET"), .target = STR_LIT("/"),
                                        .host = STR_LIT("t") };
    CHECK_INT(http1_client_send(cl, &req, client_cb, &d, NULL), 0);
    uint64_t start = loop_now_ms(d.loop);
    while (!d.client_done && loop_now_ms(d.loop) - start < 3000)
        loop_run_once(d.loop, 50);
    CHECK_INT(d.client_status, 200);
    /* Re-register the drained callback now that the request is done. */
    http1_server_drain(d.server, on_drained, &d);
    while (!d.is_drained && loop_now_ms(d.loop) - start < 3000)
        loop_run_once(d.loop, 50);
    CHECK(d.is_drained);
    CHECK_INT(http1_server_stats(d.server)->active, 0);
    /* The listener is closed: new connections are refused. */
    int fd = test_connect(net_addr_port(&a));
    CHECK(fd < 0);
    if (fd >= 0)
        close(fd);
    http1_client_free(cl);
    http1_server_free(d.server);
    loop_run_once(d.loop, 0);
    loop_free(d.loop);
}

/* ---- client ------------------------------------------------------------- */

struct client_ctx {
    int done;
    int last;
    char body[64];
};

static void count_cb(int err, const struct http1_client_response *r, void *arg)
{
    struct client_ctx *c = arg;
    c->done++;
    c->last = err ? err : r->status;
    if (!err)
        str_copy_cstr(str_make(r->body.p, r->body.n < 63 ? r->body.n : 63), c->body, sizeof c->body);
}

static void run_until(struct loop *l, int *done, int want)
{
    uint64_t start = loop_now_ms(l);
    while (*done < want && loop_now_ms(l) - start < 5000)
        loop_run_once(l, 50);
}

static void never_answer(struct http1_exchange *x, void *arg) { (void)x; (void)arg; }

static void test_client_pool_timeout_refused(void)
{
    struct test_server ts;
    struct http1_server_config cfg = { .handler = hello };
    CHECK_INT(test_server_start(&ts, &cfg), 0);
    struct loop *l = loop_new();
    struct http1_client *cl = http1_client_new(l, NULL);
    struct client_ctx c = { 0 };
    struct http1_client_request req = { .method = STR_LIT("GET"), .target = STR_LIT("/"), .host = STR_LIT("t") };
    net_addr_from_host(STR_LIT("127.0.0.1"), ts.port, &req.addr);
    /* Sequential requests reuse one pooled connection. */
    for (int i = 0; i < 5; i++) {
        CHECK_INT(http1_client_send(cl, &req, count_cb, &c, NULL), 0);
        run_until(l, &c.done, i + 1);
        CHECK_INT(c.last, 200);
    }
    CHECK_STR(c.body, "hello");
    CHECK_INT(http1_client_stats(cl)->connects, 1);
    CHECK_INT(http1_client_stats(cl)->reuses, 4);
    CHECK_INT(http1_client_stats(cl)->idle, 1);
    /* POST with a body. */
    req.method = STR_LIT("POST");
    req.body = STR_LIT("{\"a\":1}");
    CHECK_INT(http1_client_send(cl, &req, count_cb, &c, NULL), 0);
    run_until(l, &c.done, 6);
    CHECK_INT(c.last, 200);
    test_server_stop(&ts);

    /* A server that never answers: the request deadline fires. */
    struct http1_server_config slow = { .handler = never_answer };
    CHECK_INT(test_server_start(&ts, &slow), 0);
    net_addr_from_host(STR_LIT("127.0.0.1"), ts.port, &req.addr);
    req.timeout_ms = 200;
    CHECK_INT(http1_client_send(cl, &req, count_cb, &c, NULL), 0);
    run_until(l, &c.done, 7);
    CHECK_INT(c.last, -ETIMEDOUT);
    uint16_t dead_port = ts.port;
    test_server_stop(&ts);

    /* Nobody listening: refused, reported from the loop, not inside send. */
    net_addr_from_host(STR_LIT("127.0.0.1"), dead_port, &req.addr);
    CHECK_INT(http1_client_send(cl, &req, count_cb, &c, NULL), 0);
    CHECK_INT(c.done, 7);
    run_until(l, &c.done, 8);
    CHECK_INT(c.last, -ECONNREFUSED);

    /* Header injection is refused up front. */
    struct http1_header bad = { STR_LIT("X-A"), STR_LIT("1\r\nX-B: 2") };
    req.headers = &bad;
    req.nheaders = 1;
    CHECK_INT(http1_client_send(cl, &req, count_cb, &c, NULL), -EINVAL);
    http1_client_free(cl);
    loop_run_once(l, 0);
    loop_free(l);
}

static struct http1_client *victim;
static void free_inside_cb(int err, const struct http1_client_response *r, void *arg)
{
    int *done = arg;
    CHECK_INT(err, 0);
    CHECK_INT(r ? r->status : 0, 200);
    http1_client_free(victim); /* the owner tears the client down from its callback */
    (*done)++;
}

static void test_client_free_inside_callback(void)
{
    struct test_server ts;
    struct http1_server_config cfg = { .handler = hello };
    CHECK_INT(test_server_start(&ts, &cfg), 0);
    struct loop *l = loop_new();
    victim = http1_client_new(l, NULL);
    int done = 0;
    struct http1_client_request req = { .method = STR_LIT("GET"), .target = STR_LIT("/"), .host = STR_LIT("t") };
    net_addr_from_host(STR_LIT("127.0.0.1"), ts.port, &req.addr);
    CHECK_INT(http1_client_send(victim, &req, free_inside_cb, &done, NULL), 0);
    run_until(l, &done, 1);
    CHECK_INT(done, 1);
    loop_run_once(l, 0); /* the deferred frees; ASan reports any use after free */
    loop_free(l);
    test_server_stop(&ts);
}

static int wrap_tls(struct sock *s, void *arg) { return tls_sock_server(arg, s); }

/* HTTPS through the same server code, with curl as the real client. */
static void test_https_with_curl(void)
{
    char dir[] = "/tmp/strata-https-XXXXXX", cmd[2048];
    CHECK(mkdtemp(dir) != NULL);
    snprintf(cmd, sizeof cmd,
             "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=localhost "
             "-addext subjectAltName=DNS:localhost -keyout %s/key.pem -out %s/cert.pem 2>/dev/null",
             dir, dir);
    CHECK_INT(system(cmd), 0);
    char certf[256], keyf[256];
    snprintf(certf, sizeof certf, "%s/cert.pem", dir);
    snprintf(keyf, sizeof keyf, "%s/key.pem", dir);
    struct tls_cert_pair pair = { .cert_file = certf, .key_file = keyf };
    struct tls_server_config tc = { .certs = &pair, .ncerts = 1 };
    struct tls_error terr;
    struct tls_server_ctx *ctx = tls_server_ctx_new(&tc, &terr);
    CHECK(ctx != NULL);
    if (!ctx) {
        fprintf(stderr, "tls: %s\n", terr.msg);
        return;
    }
    struct http1_server_config cfg = { .handler = hello, .wrap = wrap_tls, .wrap_arg = ctx };
    struct test_server ts;
    CHECK_INT(test_server_start(&ts, &cfg), 0);
    /* Two requests on one connection (keep-alive over TLS), then a POST. */
    snprintf(cmd, sizeof cmd,
             "curl -sS --max-time 5 --cacert %s --resolve localhost:%u:127.0.0.1 -w ' %%{http_code} %%{num_connects}' "
             "https://localhost:%u/a https://localhost:%u/b --next --cacert %s --resolve localhost:%u:127.0.0.1 "
             "-d x=1 https://localhost:%u/c -w ' %%{http_code}' 2>&1",
             certf, ts.port, ts.port, ts.port, certf, ts.port, ts.port);
    FILE *p = popen(cmd, "r");
    char out[512] = "";
    size_t n = p ? fread(out, 1, sizeof out - 1, p) : 0;
    out[n] = '\0';
    if (p)
        pclose(p);
    CHECK_STR(out, "hello 200 1hello 200 0hello 200");
    /* Plain HTTP to the TLS port is refused, not served. */
    snprintf(cmd, sizeof cmd, "curl -s --max-time 5 -o /dev/null -w '%%{http_code}' http://127.0.0.1:%u/ 2>/dev/null", ts.port);
    p = popen(cmd, "r");
    n = p ? fread(out, 1, sizeof out - 1, p) : 0;
    out[n] = '\0';
    if (p)
        pclose(p);
    CHECK_STR(out, "000");
    test_server_stop(&ts);
    tls_server_ctx_unref(ctx);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK_INT(system(cmd), 0);
}

static int aborted;
static void on_abort_count(struct http1_exchange *x) { (void)x; aborted++; }
static void park(struct http1_exchange *x, void *arg)
{
    (void)arg;
    x->on_abort = on_abort_count; /* answer later... but the client leaves */
}

static void test_client_abort_while_handling(void)
{
    struct http1_server_config cfg = { .handler = park };
    struct test_server ts;
    aborted = 0;
    CHECK_INT(test_server_start(&ts, &cfg), 0);
    int fd = test_connect(ts.port);
    SEND(fd, "GET /slow HTTP/1.1\r\nHost: a\r\n\r\n");
    /* Wait until the server has the request, then leave. */
    for (int i = 0; i < 200 && http1_server_stats(ts.server)->requests == 0; i++)
        usleep(5000);
    close(fd);
    for (int i = 0; i < 200 && !__atomic_load_n(&aborted, __ATOMIC_SEQ_CST); i++)
        usleep(5000);
    CHECK_INT(__atomic_load_n(&aborted, __ATOMIC_SEQ_CST), 1);
    CHECK_INT(http1_server_stats(ts.server)->client_aborts, 1);
    CHECK_INT(http1_server_stats(ts.server)->active, 0);
    test_server_stop(&ts);
}

/* Without on_abort the exchange outlives the client until the handler
 * answers (late callbacks never touch freed memory; ASan would say so). */
static struct http1_exchange *parked;
static void park_plain(struct http1_exchange *x, void *arg)
{
    (void)arg;
    parked = x;
}

static void answer_parked(void *arg)
{
    int *rc = arg;
    *rc = http1_respond(parked, 200, NULL, 0, STR_LIT("late"));
}

static void test_orphan_answer_after_client_left(void)
{
    struct http1_server_config cfg = { .handler = park_plain };
    struct test_server ts;
    parked = NULL;
    CHECK_INT(test_server_start(&ts, &cfg), 0);
    int fd = test_connect(ts.port);
    SEND(fd, "POST /slow HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc");
    for (int i = 0; i < 200 && http1_server_stats(ts.server)->requests == 0; i++)
        usleep(5000);
    close(fd);
    for (int i = 0; i < 200 && http1_server_stats(ts.server)->client_aborts == 0; i++)
        usleep(5000);
    CHECK_INT(http1_server_stats(ts.server)->client_aborts, 1);
    /* The request is still readable, and the late answer is discarded. */
    CHECK(parked != NULL && str_eq(parked->body, STR_LIT("abc")));
    int rc = 1;
    loop_post(ts.loop, answer_parked, &rc);
    for (int i = 0; i < 200 && __atomic_load_n(&rc, __ATOMIC_SEQ_CST) == 1; i++)
        usleep(5000);
    CHECK_INT(__atomic_load_n(&rc, __ATOMIC_SEQ_CST), -ECONNRESET);
    test_server_stop(&ts);
}

static void test_url_parse(void)
{
    struct http1_url u;
    CHECK_INT(http1_url_parse(STR_LIT("http://127.0.0.1:4318"), &u), 0);
    CHECK_STRV(u.host, "127.0.0.1");
    CHECK_INT(u.port, 4318);
    CHECK_STRV(u.path, "/");
    CHECK_INT(http1_url_parse(STR_LIT("https://[::1]/v1/traces?x=1#frag"), &u), 0);
    CHECK_STRV(u.host, "::1");
    CHECK_INT(u.port, 443);
    CHECK(u.is_tls);
    CHECK_STRV(u.path, "/v1/traces?x=1");
    CHECK_INT(http1_url_parse(STR_LIT("http://user-service"), &u), 0);
    CHECK_STRV(u.host, "user-service");
    CHECK_INT(u.port, 80);
    CHECK_INT(http1_url_parse(STR_LIT("ftp://x"), &u), -EINVAL);
    CHECK_INT(http1_url_parse(STR_LIT("http://a:b@h/"), &u), -EINVAL);
    CHECK_INT(http1_url_parse(STR_LIT("http://h:70000/"), &u), -EINVAL);
    CHECK_INT(http1_url_parse(STR_LIT("http:///x"), &u), -EINVAL);
}

int main(void)
{
    RUN(test_slowloris_gets_408);
    RUN(test_idle_keepalive_closed);
    RUN(test_head_204_and_error_body);
    RUN(test_max_connections_waits_in_backlog);
    RUN(test_large_response);
    RUN(test_drain_finishes_in_flight);
    RUN(test_client_pool_timeout_refused);
    RUN(test_client_free_inside_callback);
    RUN(test_https_with_curl);
    RUN(test_client_abort_while_handling);
    RUN(test_orphan_answer_after_client_left);
    RUN(test_url_parse);
    return check_done();
}
