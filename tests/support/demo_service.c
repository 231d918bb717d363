/* strata-demo-service: a small service on the framework, for the
 * framework's end-to-end tests (tests/integration/test_service.sh).
 *   GET  /v1/hello/{name}      → {"hello": name}
 *   POST /v1/items             → validates {"name": string 1..50, "qty": 1..1000}, 201 with it
 *   GET  /v1/slow/{ms}         → answers after ms milliseconds (async, on a loop timer)
 *   GET  /v1/call/{port}       → calls GET /v1/hello/peer on 127.0.0.1:port (service_call),
 *                                propagating traceparent and x-request-id; 503/504 JSON on failure
 *   GET  /v1/call-named        → the same to $PEER_URL, which only HTTP_PROXY can reach
 *   GET|POST /v1/echo        → {"service", "method", "target", "headers": {lower-case name: value}, "body_bytes"}:
 *                                what reached the service, for the proxy's tests
 * Readiness check "flag": ready unless the file $READY_FLAG_FILE exists. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/arena.h"
#include "core/log.h"
#include "core/service.h"

static void hello(struct service_req *r, void *arg)
{
    (void)arg;
    struct str name = service_req_param(r, "name");
    json_t *body = json_object();
    json_object_set_new(body, "hello", json_stringn(name.p, name.n));
    service_reply_json(r, 200, body);
}

static void echo(struct service_req *r, void *arg)
{
    (void)arg;
    const struct http1_request *q = service_req_request(r);
    json_t *hs = json_object();
    for (size_t i = 0; i < q->nheaders; i++) {
        char name[128];
        size_t n = q->headers[i].name.n < sizeof name - 1 ? q->headers[i].name.n : sizeof name - 1;
        for (size_t j = 0; j < n; j++) {
            char c = q->headers[i].name.p[j];
            name[j] = c >= 'A' && c <= 'Z' ? (char)(c + 32) : c;
        }
        name[n] = '\0';
        json_t *prev = json_object_get(hs, name);
        if (prev) { /* repeated fields: joined as a list, RFC 9110 §5.3 */
            char *v = NULL;
            if (asprintf(&v, "%s, %.*s", json_string_value(prev), STR_FMT(q->headers[i].value)) >= 0) {
                json_object_set_new(hs, name, json_string(v));
                free(v);
            }
        } else {
            json_object_set_new(hs, name, json_stringn(q->headers[i].value.p, q->headers[i].value.n));
        }
    }
    const char *svc = getenv("OTEL_SERVICE_NAME");
    service_reply_json(r, 200, json_pack("{s:s, s:s%, s:s%, s:o, s:I}", "service", svc ? svc : "demo", "method",
                                         q->method.p, q->method.n, "target", q->target.p, q->target.n, "headers", hs,
                                         "body_bytes", (json_int_t)service_req_body(r).n));
}

static void create_item(struct service_req *r, void *arg)
{
    (void)arg;
    json_t *in;
    if (service_req_json(r, 8, &in) < 0)
        return;
    struct json_error err;
    const char *name;
    json_int_t qty;
    static const char *const allowed[] = { "name", "qty", NULL };
    if (json_check_only_keys(in, allowed, &err) < 0 || json_get_string(in, "name", true, 1, 50, &name, &err) < 0 ||
        json_get_int(in, "qty", true, 1, 1000, &qty, &err) < 0) {
        json_decref(in);
        service_reply_json_error(r, &err);
        return;
    }
    service_reply_json(r, 201, in);
}

struct slow {
    struct loop_timer t;
    struct service_req *r;
};

static void slow_done(struct loop_timer *t)
{
    struct slow *s = t->data;
    service_reply(s->r, 200, "application/json", STR_LIT("{\"slow\":true}"));
}

static void slow(struct service_req *r, void *arg)
{
    (void)arg;
    uint64_t ms;
    if (str_to_u64(service_req_param(r, "ms"), &ms) < 0 || ms > 60000) {
        service_reply_error(r, 400, "invalid_parameter", "ms: expected 0..60000");
        return;
    }
    struct slow *s = arena_alloc(service_req_arena(r), sizeof *s);
    s->r = r;
    loop_timer_init(service_req_loop(r), &s->t, slow_done, s);
    loop_timer_start(&s->t, ms);
}

static void call_done(struct service_req *r, int err, const struct http1_client_response *resp, void *arg)
{
    (void)arg;
    if (err) {
        service_reply_upstream_error(r, err, "the peer");
        return;
    }
    service_reply(r, resp->status, "application/json", resp->body);
}

static void call_url(struct service_req *r, const char *base)
{
    struct service_call_opts o = { .method = "GET", .path = "/v1/hello/peer", .timeout_ms = 2000 };
    int rc = service_call(r, base, &o, call_done, NULL);
    if (rc < 0)
        service_reply_upstream_error(r, rc, "the peer");
}

static void call_peer(struct service_req *r, void *arg)
{
    (void)arg;
    uint64_t port;
    if (str_to_u64(service_req_param(r, "port"), &port) < 0 || port == 0 || port > 65535) {
        service_reply_error(r, 400, "invalid_parameter", "port: expected 1..65535");
        return;
    }
    char base[64];
    snprintf(base, sizeof base, "http://127.0.0.1:%u", (unsigned)port);
    call_url(r, base);
}

/* PEER_URL names the peer (http://peer-service): reachable only through HTTP_PROXY. */
static void call_named(struct service_req *r, void *arg)
{
    (void)arg;
    call_url(r, getenv("PEER_URL"));
}

static int flag_check(void *arg, char *reason, size_t n)
{
    (void)arg;
    const char *f = getenv("READY_FLAG_FILE");
    if (f && access(f, F_OK) == 0) {
        snprintf(reason, n, "flag file %s exists", f);
        return -1;
    }
    return 0;
}

int main(void)
{
    struct service_config cfg = { .name = "demo", .listen = "127.0.0.1:0" };
    struct service *s = service_new(&cfg);
    if (!s)
        return 2;
    service_route(s, "GET", "/v1/hello/{name}", hello, NULL);
    service_route(s, "POST", "/v1/items", create_item, NULL);
    service_route(s, "GET", "/v1/echo", echo, NULL);
    service_route(s, "POST", "/v1/echo", echo, NULL);
    service_route(s, "GET", "/v1/slow/{ms}", slow, NULL);
    service_route(s, "GET", "/v1/call/{port}", call_peer, NULL);
    service_route(s, "GET", "/v1/call-named", call_named, NULL);
    service_add_check(s, "flag", flag_check, NULL);
    if (service_bind(s) < 0)
        return 1;
    /* Tests read the chosen port from this line. */
    printf("port=%u\n", service_port(s));
    fflush(stdout);
    int rc = service_run(s);
    service_free(s);
    return rc < 0 ? 1 : 0;
}
