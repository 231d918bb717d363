/* The OTLP/HTTP receiver and its query API (control/traces.c), hosted on a
 * real service (one worker, 127.0.0.1:0) and driven over raw sockets:
 * bodies as our exporter writes them and as the OTLP/JSON spec also allows
 * (upper-case hex ids, integer nanoseconds, enum names), a real tracer
 * (core/trace_export.c) exporting into it, partial success for malformed
 * spans, 400/413/415 for bodies that are not OTLP JSON (nothing kept),
 * random mutations of a valid body (never a crash, only 200 or 400), the
 * token on the GETs, duplicates, and the bounds: oldest traces evicted
 * first, counted. */
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "control/traces.h"
#include "core/service.h"
#include "core/trace.h"
#include "support/test_server.h"

#define TOKEN "trace-token-1"
/* Small bounds, so that the eviction test can reach them. */
#define MAX_TRACES 8
#define MAX_SPANS 32

static struct traces *store;
static struct service *svc;
static uint16_t port;
static pthread_t svc_thread;
static struct loop *worker_loop;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;

/* ---- the service -------------------------------------------------------------------- */

static bool check_token(struct service_req *r, void *arg)
{
    (void)arg;
    struct str h = service_req_header(r, "Authorization");
    if (h.n == strlen("Bearer " TOKEN) && !memcmp(h.p, "Bearer " TOKEN, h.n))
        return true;
    service_reply_error(r, 401, "unauthorized", "token");
    return false;
}

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

static int start_service(void)
{
    setenv("WORKERS", "1", 1);
    setenv("LISTEN_ADDR", "127.0.0.1:0", 1);
    setenv("SHUTDOWN_TIMEOUT_MS", "500", 1);
    unsetenv("MAX_BODY_BYTES");
    unsetenv("OTEL_EXPORTER_OTLP_ENDPOINT");
    /* Twice the receiver's bound: the 413 below is traces.c's own. */
    struct service_config cfg = { .name = "test-traces", .listen = "127.0.0.1:0", .workers = 1,
                                  .max_body = 2 * TRACES_MAX_BODY };
    svc = service_new(&cfg);
    store = traces_new(MAX_TRACES, MAX_SPANS);
    struct admin_auth auth = { check_token, NULL };
    if (!svc || !store || traces_register(store, svc, &auth) < 0 || service_bind(svc) < 0)
        return -1;
    service_on_worker(svc, worker_start, NULL, NULL);
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

#define RESP_CAP (1u << 20)
static char resp[RESP_CAP];

/* One request on a fresh connection (headers: extra lines, each ending in
 * \r\n); the status, or -1; the response in resp. */
static int http(const char *method, const char *target, const char *headers, const char *body, size_t blen)
{
    resp[0] = '\0';
    int fd = test_connect(port);
    if (fd < 0)
        return -1;
    char head[1024];
    int hn = snprintf(head, sizeof head, "%s %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n%s", method, target,
                      headers ? headers : "");
    if (body)
        hn += snprintf(head + hn, sizeof head - (size_t)hn, "Content-Length: %zu\r\n", blen);
    hn += snprintf(head + hn, sizeof head - (size_t)hn, "\r\n");
    bool eof;
    int status = -1;
    /* Head and body in one send: the server may answer a refused body
     * before reading it all, so the answer is read whatever the send says. */
    char *req = malloc((size_t)hn + blen);
    if (!req) {
        close(fd);
        return -1;
    }
    memcpy(req, head, (size_t)hn);
    if (body)
        memcpy(req + hn, body, blen);
    test_send_all(fd, req, (size_t)hn + (body ? blen : 0));
    free(req);
    if (test_recv(fd, resp, sizeof resp, 5000, &eof, whole_response) > 12 && !strncmp(resp, "HTTP/1.1 ", 9))
        status = atoi(resp + 9);
    close(fd);
    return status;
}

static int post_type(const char *body, const char *ctype)
{
    char h[128];
    snprintf(h, sizeof h, "Content-Type: %s\r\n", ctype);
    return http("POST", "/v1/traces", h, body, strlen(body));
}
static int post(const char *body) { return post_type(body, "application/json"); }
static int get(const char *target) { return http("GET", target, "Authorization: Bearer " TOKEN "\r\n", NULL, 0); }

/* The last response's body as JSON (a new reference, or NULL). */
static json_t *body_json(void)
{
    const char *b = strstr(resp, "\r\n\r\n");
    return b ? json_loads(b + 4, 0, NULL) : NULL;
}

static json_int_t stat_of(const char *name)
{
    if (get("/v1/traces?limit=1") != 200)
        return -1;
    json_t *j = body_json();
    json_int_t v = json_integer_value(json_object_get(json_object_get(j, "stats"), name));
    json_decref(j);
    return v;
}

static bool error_code_is(const char *code)
{
    json_t *j = body_json();
    const char *c = json_string_value(json_object_get(json_object_get(j, "error"), "code"));
    bool ok = c && !strcmp(c, code) && json_object_get(json_object_get(j, "error"), "request_id");
    json_decref(j);
    return ok;
}

/* ---- bodies ----------------------------------------------------------------------------- */

#define T1 "4bf92f3577b34da6a3ce929d0e0e4736"
#define T2 "0af7651916cd43dd8448eb211c80319c"

/* gateway (root, server) → upstream (client) → backend (server, another
 * resource), as trace_export.c writes them; T2: one failed span. */
static const char *const body_main =
    "{\"resourceSpans\":["
    "{\"resource\":{\"attributes\":[{\"key\":\"service.name\",\"value\":{\"stringValue\":\"gateway\"}}]},"
    " \"scopeSpans\":[{\"scope\":{\"name\":\"strata\"},\"spans\":["
    "  {\"traceId\":\"" T1 "\",\"spanId\":\"00f067aa0ba902b7\",\"flags\":1,\"name\":\"gateway\",\"kind\":2,"
    "   \"startTimeUnixNano\":\"1700000000000000000\",\"endTimeUnixNano\":\"1700000000050000000\","
    "   \"attributes\":[{\"key\":\"http.request.method\",\"value\":{\"stringValue\":\"POST\"}},"
    "                   {\"key\":\"http.response.status_code\",\"value\":{\"intValue\":\"201\"}},"
    "                   {\"key\":\"ok\",\"value\":{\"boolValue\":true}},"
    "                   {\"key\":\"ratio\",\"value\":{\"doubleValue\":0.5}},"
    "                   {\"key\":\"list\",\"value\":{\"arrayValue\":{\"values\":[{\"stringValue\":\"a\"},{\"intValue\":2}]}}}],"
    "   \"status\":{\"code\":0}},"
    "  {\"traceId\":\"" T1 "\",\"spanId\":\"1111111111111111\",\"parentSpanId\":\"00f067aa0ba902b7\","
    "   \"name\":\"upstream\",\"kind\":3,"
    "   \"startTimeUnixNano\":\"1700000000001000000\",\"endTimeUnixNano\":\"1700000000049000000\","
    "   \"attributes\":[],\"status\":{\"code\":0}}"
    " ]}]},"
    "{\"resource\":{\"attributes\":[{\"key\":\"service.name\",\"value\":{\"stringValue\":\"order-svc\"}}]},"
    " \"scopeSpans\":[{\"scope\":{\"name\":\"strata\"},\"spans\":["
    "  {\"traceId\":\"" T1 "\",\"spanId\":\"2222222222222222\",\"parentSpanId\":\"1111111111111111\","
    "   \"name\":\"POST /v1/orders\",\"kind\":2,"
    "   \"startTimeUnixNano\":\"1700000000002000000\",\"endTimeUnixNano\":\"1700000000048000000\","
    "   \"attributes\":[],\"status\":{\"code\":0}},"
    "  {\"traceId\":\"" T2 "\",\"spanId\":\"3333333333333333\",\"name\":\"GET /v1/orders/{id}\",\"kind\":2,"
    "   \"startTimeUnixNano\":\"1700000001000000000\",\"endTimeUnixNano\":\"1700000001002000000\","
    "   \"status\":{\"code\":2,\"message\":\"boom\"}}"
    " ]}]}]}";

static void test_post_and_query(void)
{
    CHECK_INT(post(body_main), 200);
    json_t *j = body_json();
    CHECK(json_is_object(j) && json_object_size(j) == 0); /* full success: {} */
    json_decref(j);

    /* the token */
    CHECK_INT(http("GET", "/v1/traces", NULL, NULL, 0), 401);
    CHECK(error_code_is("unauthorized"));
    CHECK_INT(http("GET", "/v1/traces/" T1, "Authorization: Bearer nope\r\n", NULL, 0), 401);

    /* the list: newest first */
    CHECK_INT(get("/v1/traces"), 200);
    j = body_json();
    json_t *list = json_object_get(j, "traces");
    CHECK_INT(json_array_size(list), 2);
    json_t *t2 = json_array_get(list, 0), *t1 = json_array_get(list, 1);
    CHECK_STR(json_string_value(json_object_get(t2, "trace_id")), T2);
    CHECK(json_is_true(json_object_get(t2, "error")));
    CHECK_STR(json_string_value(json_object_get(t1, "trace_id")), T1);
    CHECK_STR(json_string_value(json_object_get(t1, "root_service")), "gateway");
    CHECK_STR(json_string_value(json_object_get(t1, "root_name")), "gateway");
    CHECK_STR(json_string_value(json_object_get(t1, "start")), "2023-11-14T22:13:20.000Z");
    CHECK_STR(json_string_value(json_object_get(t1, "start_unix_nano")), "1700000000000000000");
    CHECK(json_real_value(json_object_get(t1, "duration_ms")) == 50.0);
    CHECK_INT(json_integer_value(json_object_get(t1, "spans")), 3);
    CHECK(json_is_false(json_object_get(t1, "error")));
    json_t *svcs = json_object_get(t1, "services");
    CHECK_INT(json_array_size(svcs), 2);
    CHECK_STR(json_string_value(json_array_get(svcs, 0)), "gateway");
    CHECK_STR(json_string_value(json_array_get(svcs, 1)), "order-svc");
    json_decref(j);

    /* filters */
    CHECK_INT(get("/v1/traces?service=order-svc&error=false"), 200);
    j = body_json();
    CHECK_INT(json_array_size(json_object_get(j, "traces")), 1);
    CHECK_STR(json_string_value(json_object_get(json_array_get(json_object_get(j, "traces"), 0), "trace_id")), T1);
    json_decref(j);
    CHECK_INT(get("/v1/traces?error=true"), 200);
    j = body_json();
    CHECK_INT(json_array_size(json_object_get(j, "traces")), 1);
    json_decref(j);
    CHECK_INT(get("/v1/traces?min_duration_ms=10"), 200);
    j = body_json();
    CHECK_INT(json_array_size(json_object_get(j, "traces")), 1);
    json_decref(j);
    CHECK_INT(get("/v1/traces?limit=1"), 200);
    j = body_json();
    CHECK_INT(json_array_size(json_object_get(j, "traces")), 1);
    CHECK_INT(json_integer_value(json_object_get(j, "matched")), 2);
    json_decref(j);
    CHECK_INT(get("/v1/traces?service=nobody"), 200);
    j = body_json();
    CHECK_INT(json_array_size(json_object_get(j, "traces")), 0);
    json_decref(j);
    CHECK_INT(get("/v1/traces?limit=0"), 400);
    CHECK(error_code_is("invalid_query"));
    CHECK_INT(get("/v1/traces?limit=abc"), 400);
    CHECK_INT(get("/v1/traces?min_duration_ms=-1"), 400);
    CHECK_INT(get("/v1/traces?error=maybe"), 400);

    /* one trace: every span, sorted by start, attributes as plain JSON */
    CHECK_INT(get("/v1/traces/" T1), 200);
    j = body_json();
    json_t *spans = json_object_get(j, "spans");
    CHECK_INT(json_array_size(spans), 3);
    json_t *s0 = json_array_get(spans, 0), *s1 = json_array_get(spans, 1), *s2 = json_array_get(spans, 2);
    CHECK_STR(json_string_value(json_object_get(s0, "span_id")), "00f067aa0ba902b7");
    CHECK(json_is_null(json_object_get(s0, "parent_span_id")));
    CHECK_STR(json_string_value(json_object_get(s0, "kind")), "server");
    CHECK_STR(json_string_value(json_object_get(s0, "service")), "gateway");
    CHECK_STR(json_string_value(json_object_get(s0, "start_unix_nano")), "1700000000000000000");
    CHECK_STR(json_string_value(json_object_get(s0, "end_unix_nano")), "1700000000050000000");
    json_t *attrs = json_object_get(s0, "attributes");
    CHECK_STR(json_string_value(json_object_get(attrs, "http.request.method")), "POST");
    CHECK_INT(json_integer_value(json_object_get(attrs, "http.response.status_code")), 201);
    CHECK(json_is_true(json_object_get(attrs, "ok")));
    CHECK(json_real_value(json_object_get(attrs, "ratio")) == 0.5);
    CHECK_INT(json_array_size(json_object_get(attrs, "list")), 2);
    CHECK_STR(json_string_value(json_object_get(json_object_get(s0, "status"), "code")), "unset");
    CHECK_STR(json_string_value(json_object_get(s1, "parent_span_id")), "00f067aa0ba902b7");
    CHECK_STR(json_string_value(json_object_get(s1, "kind")), "client");
    CHECK_STR(json_string_value(json_object_get(s2, "parent_span_id")), "1111111111111111");
    CHECK_STR(json_string_value(json_object_get(s2, "service")), "order-svc");
    json_decref(j);
    CHECK_INT(get("/v1/traces/" T2), 200);
    j = body_json();
    json_t *st = json_object_get(json_array_get(json_object_get(j, "spans"), 0), "status");
    CHECK_STR(json_string_value(json_object_get(st, "code")), "error");
    CHECK_STR(json_string_value(json_object_get(st, "message")), "boom");
    json_decref(j);
    /* ids in upper case are the same trace */
    CHECK_INT(get("/v1/traces/4BF92F3577B34DA6A3CE929D0E0E4736"), 200);
    CHECK_INT(get("/v1/traces/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"), 404);
    CHECK(error_code_is("not_found"));
    CHECK_INT(get("/v1/traces/xyz"), 404);

    /* the same batch again (an exporter's retry): nothing doubles */
    json_int_t dup0 = stat_of("duplicate_spans");
    CHECK_INT(post(body_main), 200);
    CHECK_INT(stat_of("spans"), 4);
    CHECK_INT(stat_of("duplicate_spans"), dup0 + 4);
}

/* What the OTLP/JSON spec also allows: hex in upper case, integer nanos,
 * enum names, an all-zero parentSpanId, no resource (unknown_service). */
static void test_spec_variants(void)
{
    const char *body = "{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":["
                       "{\"traceId\":\"5B8EFFF798038103D269B633813FC60C\",\"spanId\":\"EEE19B7EC3C1B174\","
                       " \"parentSpanId\":\"0000000000000000\",\"name\":\"x\",\"kind\":\"SPAN_KIND_CLIENT\","
                       " \"startTimeUnixNano\":1700000002000000000,\"endTimeUnixNano\":1700000002000001000,"
                       " \"status\":{\"code\":\"STATUS_CODE_OK\"}}]}]}]}";
    CHECK_INT(post(body), 200);
    CHECK_INT(get("/v1/traces/5b8efff798038103d269b633813fc60c"), 200);
    json_t *j = body_json();
    json_t *s = json_array_get(json_object_get(j, "spans"), 0);
    CHECK_STR(json_string_value(json_object_get(s, "span_id")), "eee19b7ec3c1b174");
    CHECK(json_is_null(json_object_get(s, "parent_span_id")));
    CHECK_STR(json_string_value(json_object_get(s, "kind")), "client");
    CHECK_STR(json_string_value(json_object_get(s, "service")), "unknown_service");
    CHECK_STR(json_string_value(json_object_get(s, "end_unix_nano")), "1700000002000001000");
    CHECK_STR(json_string_value(json_object_get(json_object_get(s, "status"), "code")), "ok");
    json_decref(j);
    /* an empty request is a valid one */
    CHECK_INT(post("{}"), 200);
    CHECK_INT(post("{\"resourceSpans\":[]}"), 200);
    CHECK_INT(post_type("{}", "application/json; charset=utf-8"), 200);
}

/* A malformed span is rejected alone (OTLP partial success); the rest is kept. */
static void test_partial_success(void)
{
    const char *body = "{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":["
                       "{\"traceId\":\"not-hex\",\"spanId\":\"1234567812345678\",\"startTimeUnixNano\":\"1\"},"
                       "{\"traceId\":\"11112222333344445555666677778888\",\"spanId\":\"0000000000000000\","
                       " \"startTimeUnixNano\":\"1\"},"
                       "{\"traceId\":\"11112222333344445555666677778888\",\"spanId\":\"1234567812345678\","
                       " \"startTimeUnixNano\":\"5\",\"endTimeUnixNano\":\"4\"},"
                       "{\"traceId\":\"11112222333344445555666677778888\",\"spanId\":\"8765432187654321\","
                       " \"startTimeUnixNano\":\"1700000003000000000\",\"endTimeUnixNano\":\"1700000003000000001\","
                       " \"name\":\"kept\"}]}]}]}";
    CHECK_INT(post(body), 200);
    json_t *j = body_json();
    json_t *ps = json_object_get(j, "partialSuccess");
    CHECK_STR(json_string_value(json_object_get(ps, "rejectedSpans")), "3");
    CHECK(strstr(json_string_value(json_object_get(ps, "errorMessage")) ?: "", "traceId") != NULL);
    json_decref(j);
    CHECK_INT(get("/v1/traces/11112222333344445555666677778888"), 200);
    j = body_json();
    CHECK_INT(json_array_size(json_object_get(j, "spans")), 1);
    json_decref(j);
}

/* Not OTLP JSON: an error, and nothing kept. */
static void test_malformed(void)
{
    json_int_t spans0 = stat_of("spans"), recv0 = stat_of("received_spans");
    static const char *const bad400[] = {
        "",
        "not json",
        "{\"resourceSpans\":[",
        "[]",
        "42",
        "{\"resourceSpans\":{}}",
        "{\"resourceSpans\":[1]}",
        "{\"resourceSpans\":[{\"resource\":7}]}",
        "{\"resourceSpans\":[{\"scopeSpans\":\"x\"}]}",
        "{\"resourceSpans\":[{\"scopeSpans\":[[]]}]}",
        "{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":{}}]}]}",
        /* a good span first: the whole body is refused, so it is not kept */
        ("{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":[{\"traceId\":\"99999999999999999999999999999999\","
         "\"spanId\":\"9999999999999999\",\"startTimeUnixNano\":\"1\"},7]}]}]}"),
        "{\"a\":1,\"a\":2}",
        "{\"resourceSpans\":[]} trailing",
        "{\"x\":\"\\ud800\"}",
    };
    for (size_t i = 0; i < sizeof bad400 / sizeof *bad400; i++) {
        int st = post(bad400[i]);
        if (st != 400)
            fprintf(stderr, "body %zu: status %d\n", i, st);
        CHECK_INT(st, 400);
        CHECK(error_code_is("invalid_json") || error_code_is("invalid_otlp"));
    }
    /* nesting past the bound */
    char deep[4096];
    size_t n = 0;
    n += (size_t)snprintf(deep, sizeof deep, "{\"resourceSpans\":");
    for (int i = 0; i < 200; i++)
        deep[n++] = '[';
    for (int i = 0; i < 200; i++)
        deep[n++] = ']';
    deep[n++] = '}';
    deep[n] = '\0';
    CHECK_INT(post(deep), 400);
    CHECK_INT(post_type("{}", "application/x-protobuf"), 415);
    CHECK(error_code_is("unsupported_media_type"));
    CHECK_INT(http("POST", "/v1/traces", "Content-Type: application/json\r\nContent-Encoding: gzip\r\n", "{}", 2), 415);
    CHECK_INT(http("POST", "/v1/traces", NULL, "{}", 2), 415);
    /* over 4 MiB */
    size_t big = TRACES_MAX_BODY + 16;
    char *b = malloc(big + 1);
    memset(b, ' ', big);
    b[0] = '{';
    b[big - 1] = '}';
    b[big] = '\0';
    CHECK_INT(post(b), 413);
    CHECK(error_code_is("payload_too_large"));
    free(b);
    CHECK_INT(stat_of("spans"), spans0);
    CHECK_INT(stat_of("received_spans"), recv0);
}

/* Random byte flips, cuts and splices of a valid body: the answer is
 * always 200 or 400, and the service keeps serving. */
static void test_mutations(void)
{
    size_t len = strlen(body_main);
    char *m = malloc(len + 1);
    unsigned seed = 12345;
    int other = 0;
    for (int round = 0; round < 300; round++) {
        memcpy(m, body_main, len + 1);
        size_t mlen = len;
        int edits = 1 + (int)(rand_r(&seed) % 4);
        for (int e = 0; e < edits; e++) {
            size_t at = (size_t)rand_r(&seed) % mlen;
            switch (rand_r(&seed) % 4) {
            case 0: m[at] = (char)(rand_r(&seed) % 256); break;
            case 1: m[at] = "{}[]\",:0\\"[rand_r(&seed) % 9]; break;
            case 2: mlen = at + 1; m[mlen] = '\0'; break;
            default: memmove(m + at, m + at + 1, mlen - at); mlen--; break;
            }
            if (mlen < 2)
                break;
        }
        int st = http("POST", "/v1/traces", "Content-Type: application/json\r\n", m, mlen);
        if (st != 200 && st != 400) {
            other++;
            fprintf(stderr, "mutation %d: status %d\n", round, st);
        }
    }
    CHECK_INT(other, 0);
    free(m);
    CHECK_INT(get("/v1/traces?limit=1"), 200); /* still serving */
}

/* A real tracer (core/trace_export.c) exporting into the receiver: the
 * format we send is the format we read. */
struct export_ctx {
    struct trace_tracer *tracer;
    char trace_id[33], root_id[17], child_id[17];
    bool flushed;
    int flush_err;
};

static void flushed(int err, void *arg)
{
    struct export_ctx *e = arg;
    pthread_mutex_lock(&mu);
    e->flush_err = err;
    e->flushed = true;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
}

static void export_on_loop(void *arg)
{
    struct export_ctx *e = arg;
    char endpoint[64];
    snprintf(endpoint, sizeof endpoint, "http://127.0.0.1:%u", port);
    struct trace_config cfg;
    trace_config_init(&cfg);
    cfg.service_name = "exporter-test";
    cfg.endpoint = endpoint;
    e->tracer = trace_tracer_new(worker_loop, &cfg);
    struct trace_span *root = trace_span_start(e->tracer, "root op", TRACE_SPAN_SERVER, NULL);
    struct trace_span *child = trace_span_start(e->tracer, "child op", TRACE_SPAN_CLIENT, trace_span_ctx(root));
    trace_span_set_attr_str(child, "db.system", STR_LIT("postgresql"));
    trace_span_set_attr_int(child, "n", 7);
    trace_span_set_status(child, TRACE_STATUS_ERROR, STR_LIT("failed"));
    memcpy(e->trace_id, trace_span_ctx(root)->trace_id, 33);
    memcpy(e->root_id, trace_span_ctx(root)->span_id, 17);
    memcpy(e->child_id, trace_span_ctx(child)->span_id, 17);
    trace_span_end(child);
    trace_span_end(root);
    if (trace_tracer_flush(e->tracer, 3000, flushed, e) < 0)
        flushed(-1, e);
}

static void free_tracer_on_loop(void *arg)
{
    struct export_ctx *e = arg;
    trace_tracer_free(e->tracer);
    pthread_mutex_lock(&mu);
    e->tracer = NULL;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
}

static void test_real_exporter(void)
{
    struct export_ctx e = { 0 };
    loop_post(worker_loop, export_on_loop, &e);
    pthread_mutex_lock(&mu);
    while (!e.flushed)
        pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
    CHECK_INT(e.flush_err, 0);
    char target[80];
    snprintf(target, sizeof target, "/v1/traces/%s", e.trace_id);
    CHECK_INT(get(target), 200);
    json_t *j = body_json();
    json_t *spans = json_object_get(j, "spans");
    CHECK_INT(json_array_size(spans), 2);
    json_t *r = json_array_get(spans, 0), *c = json_array_get(spans, 1);
    CHECK_STR(json_string_value(json_object_get(r, "span_id")), e.root_id);
    CHECK_STR(json_string_value(json_object_get(r, "service")), "exporter-test");
    CHECK_STR(json_string_value(json_object_get(r, "kind")), "server");
    CHECK_STR(json_string_value(json_object_get(c, "parent_span_id")), e.root_id);
    CHECK_STR(json_string_value(json_object_get(c, "span_id")), e.child_id);
    CHECK_STR(json_string_value(json_object_get(json_object_get(c, "attributes"), "db.system")), "postgresql");
    CHECK_INT(json_integer_value(json_object_get(json_object_get(c, "attributes"), "n")), 7);
    CHECK_STR(json_string_value(json_object_get(json_object_get(c, "status"), "code")), "error");
    /* children inside their parent */
    CHECK(strcmp(json_string_value(json_object_get(c, "start_unix_nano")),
                 json_string_value(json_object_get(r, "start_unix_nano"))) >= 0);
    json_decref(j);
    e.flushed = false;
    loop_post(worker_loop, free_tracer_on_loop, &e);
    pthread_mutex_lock(&mu);
    while (e.tracer)
        pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
}

/* n spans of trace id (ids derived from tag), one request. */
static int post_trace(const char *id, int n, int tag)
{
    size_t cap = 256 + (size_t)n * 200;
    char *b = malloc(cap);
    size_t o = (size_t)snprintf(b, cap, "{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":[");
    for (int i = 0; i < n; i++)
        o += (size_t)snprintf(b + o, cap - o,
                              "%s{\"traceId\":\"%s\",\"spanId\":\"%08x%08x\",\"name\":\"s\","
                              "\"startTimeUnixNano\":\"%d\",\"endTimeUnixNano\":\"%d\"}",
                              i ? "," : "", id, (unsigned)tag + 1, (unsigned)i + 1, 1000 + i, 2000 + i);
    snprintf(b + o, cap - o, "]}]}]}");
    int st = post(b);
    free(b);
    return st;
}

static void test_bounds(void)
{
    /* traces: 10 new ones of 2 spans into a store of 8 → the oldest go */
    json_int_t ev0 = stat_of("evicted_traces");
    char ids[10][33];
    for (int i = 0; i < 10; i++) {
        snprintf(ids[i], sizeof ids[i], "%032x", 0xabc00 + i);
        CHECK_INT(post_trace(ids[i], 2, i), 200);
    }
    CHECK_INT(stat_of("traces"), MAX_TRACES);
    CHECK(stat_of("evicted_traces") >= ev0 + 2);
    char target[80];
    snprintf(target, sizeof target, "/v1/traces/%s", ids[0]);
    CHECK_INT(get(target), 404);
    snprintf(target, sizeof target, "/v1/traces/%s", ids[1]);
    CHECK_INT(get(target), 404);
    snprintf(target, sizeof target, "/v1/traces/%s", ids[9]);
    CHECK_INT(get(target), 200);
    CHECK(stat_of("spans") <= MAX_SPANS);

    /* spans: a trace of 30 evicts the older ones until it fits */
    CHECK_INT(post_trace("0000000000000000000000000000beef", 30, 100), 200);
    CHECK(stat_of("spans") <= MAX_SPANS);
    CHECK_INT(get("/v1/traces/0000000000000000000000000000beef"), 200);
    json_t *j = body_json();
    CHECK_INT(json_array_size(json_object_get(j, "spans")), 30);
    json_decref(j);
    snprintf(target, sizeof target, "/v1/traces/%s", ids[5]);
    CHECK_INT(get(target), 404);

    /* a trace larger than the store: what fits is kept, the rest counted */
    json_int_t dropped0 = stat_of("dropped_spans");
    CHECK_INT(post_trace("0000000000000000000000000000cafe", 40, 200), 200);
    CHECK_INT(stat_of("spans"), MAX_SPANS);
    CHECK_INT(stat_of("traces"), 1);
    CHECK_INT(stat_of("dropped_spans"), dropped0 + 8);
    CHECK_INT(get("/v1/traces/0000000000000000000000000000beef"), 404);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    if (start_service() < 0) {
        fprintf(stderr, "cannot start the service\n");
        return 1;
    }
    RUN(test_post_and_query);
    RUN(test_spec_variants);
    RUN(test_partial_success);
    RUN(test_malformed);
    RUN(test_mutations);
    RUN(test_real_exporter);
    RUN(test_bounds);
    service_shutdown(svc);
    pthread_join(svc_thread, NULL);
    service_free(svc);
    traces_free(store);
    return check_done();
}
