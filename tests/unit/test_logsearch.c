/* GET /v1/logs (logsearch.c) on a real service (one worker, 127.0.0.1:0)
 * over a temp log tree laid out as the runtime writes it: several replicas
 * of two workloads (and one whose name extends another's), app and proxy
 * files, rotations .log.2/.log.1/.log, levels, trace ids, a crash message
 * and a broken JSON line. Checked over a raw socket: the token, every
 * filter, time order across replicas and rotations, the limit (newest
 * kept, truncated), and 400 for bad parameters. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "control/logsearch.h"
#include "core/service.h"
#include "support/test_server.h"

#define TOKEN "logs-token"

static char tmpdir[256], logs[300];
static struct service *svc;
static uint16_t port;
static pthread_t svc_thread;
static time_t base; /* the first line's time: an hour ago */

static bool check_token(struct service_req *r, void *arg)
{
    (void)arg;
    struct str h = service_req_header(r, "Authorization");
    if (str_eq(h, STR_LIT("Bearer " TOKEN)))
        return true;
    service_reply_error(r, 401, "unauthorized", "token");
    return false;
}

static void *svc_main(void *arg)
{
    (void)arg;
    service_run(svc);
    return NULL;
}

/* ---- the log tree --------------------------------------------------------------- */

static void ts_at(int sec, int ms, char out[32])
{
    time_t t = base + sec;
    struct tm tm;
    gmtime_r(&t, &tm);
    size_t n = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, 32 - n, ".%03dZ", ms);
}

static FILE *open_log(const char *replica, const char *file)
{
    char path[600];
    snprintf(path, sizeof path, "%s/%s", logs, replica);
    mkdir(path, 0755);
    snprintf(path, sizeof path, "%s/%s/%s", logs, replica, file);
    return fopen(path, "w");
}

/* One JSON line at base+sec. */
static void line(FILE *f, int sec, const char *level, const char *msg, const char *trace)
{
    char ts[32];
    ts_at(sec, 0, ts);
    fprintf(f, "{\"ts\":\"%s\",\"level\":\"%s\",\"msg\":\"%s\",\"service\":\"x\"", ts, level, msg);
    if (trace)
        fprintf(f, ",\"trace_id\":\"%s\"", trace);
    fputs("}\n", f);
}

#define RA "order-svc-1a2b3c4d-aaaaa"
#define RB "order-svc-1a2b3c4d-bbbbb"
#define RU "user-svc-7c690d42-ccccc"
#define RV "order-svc-v2-3fbad494-ddddd"
#define TRACE "4bf92f3577b34da6a3ce929d0e0e4736"

static void make_tree(void)
{
    base = time(NULL) - 3600;
    snprintf(logs, sizeof logs, "%s/logs", tmpdir);
    mkdir(logs, 0755);
    /* RA: the oldest file .log.2 (t 0..2), .log.1 (t 10..12), .log (t 20.., and one at now-60s) */
    FILE *f = open_log(RA, "app.log.2");
    line(f, 0, "info", "a-0", NULL);
    line(f, 1, "debug", "a-1", NULL);
    line(f, 2, "warn", "a-2", TRACE);
    fclose(f);
    f = open_log(RA, "app.log.1");
    line(f, 10, "info", "a-10", NULL);
    fputs("panic: runtime crashed\n", f); /* a crash message: no ts, no level */
    line(f, 12, "error", "a-12", TRACE);
    fclose(f);
    f = open_log(RA, "app.log");
    line(f, 20, "info", "a-20", NULL);
    fputs("{\"ts\":\"broken\n", f); /* half a JSON object */
    line(f, 3600 - 60, "info", "a-recent", NULL);
    fclose(f);
    f = open_log(RA, "proxy.log");
    line(f, 11, "info", "p-11", TRACE);
    line(f, 21, "warn", "p-21", NULL);
    fclose(f);
    /* RB interleaves with RA in time */
    f = open_log(RB, "app.log");
    line(f, 5, "info", "b-5", NULL);
    line(f, 15, "error", "b-15", NULL);
    line(f, 25, "info", "b-25", TRACE);
    fclose(f);
    f = open_log(RU, "app.log");
    line(f, 7, "info", "u-7", TRACE);
    fclose(f);
    f = open_log(RV, "app.log");
    line(f, 8, "info", "v-8", NULL);
    fclose(f);
}

/* ---- HTTP ----------------------------------------------------------------------- */

static bool whole_response(const char *p, size_t n)
{
    const char *end = memmem(p, n, "\r\n\r\n", 4);
    if (!end)
        return false;
    const char *cl = strcasestr(p, "Content-Length:");
    size_t len = cl && cl < end ? strtoul(cl + 15, NULL, 10) : 0;
    return n >= (size_t)(end + 4 - p) + len;
}

/* GET /v1/logs?query; returns the status, the body parsed in *out (or NULL). */
static int get_logs(const char *query, bool with_token, json_t **out)
{
    static char resp[1 << 20];
    char req[2048];
    snprintf(req, sizeof req, "GET /v1/logs%s%s HTTP/1.1\r\nHost: x\r\n%sConnection: close\r\n\r\n",
             *query ? "?" : "", query, with_token ? "Authorization: Bearer " TOKEN "\r\n" : "");
    *out = NULL;
    int fd = test_connect(port);
    if (fd < 0)
        return -1;
    bool eof;
    int status = -1;
    if (test_send_all(fd, req, strlen(req)) == 0 &&
        test_recv(fd, resp, sizeof resp, 5000, &eof, whole_response) > 12 && !strncmp(resp, "HTTP/1.1 ", 9)) {
        status = atoi(resp + 9);
        const char *b = strstr(resp, "\r\n\r\n");
        if (b)
            *out = json_loads(b + 4, 0, NULL);
    }
    close(fd);
    return status;
}

/* The "msg" of every returned line, joined with spaces (raw lines as "RAW"). */
static void msgs(json_t *body, char *out, size_t cap)
{
    out[0] = '\0';
    size_t n = 0;
    json_t *lines = json_object_get(body, "lines"), *l;
    size_t i;
    json_array_foreach(lines, i, l)
    {
        json_t *line = json_object_get(l, "line");
        const char *m = json_is_object(line) ? json_string_value(json_object_get(line, "msg")) : "RAW";
        n += (size_t)snprintf(out + n, cap - n, "%s%s", i ? " " : "", m ? m : "?");
        if (n >= cap)
            return;
    }
}

static void expect(const char *query, const char *want, bool truncated)
{
    json_t *body;
    int st = get_logs(query, true, &body);
    char got[4096];
    msgs(body, got, sizeof got);
    if (st != 200 || strcmp(got, want) || json_is_true(json_object_get(body, "truncated")) != truncated)
        fprintf(stderr, "query %s: status %d, got [%s] truncated %d, want [%s] truncated %d\n", query, st, got,
                json_is_true(json_object_get(body, "truncated")), want, truncated);
    CHECK_INT(st, 200);
    CHECK_STR(got, want);
    CHECK(json_is_true(json_object_get(body, "truncated")) == truncated);
    json_decref(body);
}

/* ---- tests ---------------------------------------------------------------------- */

static void test_auth(void)
{
    json_t *body;
    CHECK_INT(get_logs("workload=order-svc", false, &body), 401);
    json_decref(body);
}

static void test_workload_in_time_order(void)
{
    /* RA's rotations oldest first, interleaved with RB, app and proxy; the
     * crash message inherits a-10's time, the broken line a-20's */
    expect("workload=order-svc", "a-0 a-1 a-2 b-5 a-10 RAW p-11 a-12 b-15 a-20 RAW p-21 b-25 a-recent", false);
    expect("workload=user-svc", "u-7", false);
    expect("workload=order-svc-v2", "v-8", false);
    expect("workload=nope", "", false);
}

static void test_filters(void)
{
    expect("workload=order-svc&container=app&replica=" RA, "a-0 a-1 a-2 a-10 RAW a-12 a-20 RAW a-recent", false);
    expect("workload=order-svc&container=proxy", "p-11 p-21", false);
    /* a minimum level; lines without one are never hidden by it */
    expect("workload=order-svc&level=warn", "a-2 RAW a-12 b-15 RAW p-21", false);
    expect("level=error", "RAW a-12 b-15 RAW", false);
    expect("trace_id=" TRACE, "a-2 u-7 p-11 a-12 b-25", false);
    expect("q=b-1", "b-15", false);
    expect("q=panic%3A+runtime", "RAW", false);
    expect("workload=order-svc&since=10m", "a-recent", false);
    char q[200], ts[32];
    ts_at(12, 0, ts);
    snprintf(q, sizeof q, "replica=" RB "&until=%s", ts);
    expect(q, "b-5", false);
    ts_at(11, 0, ts);
    char ts2[32];
    ts_at(20, 0, ts2);
    snprintf(q, sizeof q, "workload=order-svc&since=%s&until=%s&container=app", ts, ts2);
    expect(q, "a-12 b-15 a-20 RAW", false);
}

static void test_limit_and_shape(void)
{
    /* the newest three */
    expect("workload=order-svc&limit=3", "p-21 b-25 a-recent", true);
    json_t *body;
    CHECK_INT(get_logs("replica=" RA "&container=app&q=panic", true, &body), 200);
    json_t *l = json_array_get(json_object_get(body, "lines"), 0);
    CHECK_STR(json_string_value(json_object_get(l, "replica")), RA);
    CHECK_STR(json_string_value(json_object_get(l, "container")), "app");
    CHECK(json_is_null(json_object_get(l, "ts")));
    CHECK(json_is_null(json_object_get(l, "level")));
    CHECK_STR(json_string_value(json_object_get(l, "line")), "panic: runtime crashed");
    json_decref(body);
    CHECK_INT(get_logs("replica=" RB "&q=b-25", true, &body), 200);
    l = json_array_get(json_object_get(body, "lines"), 0);
    CHECK_STR(json_string_value(json_object_get(l, "level")), "info");
    CHECK(json_is_string(json_object_get(l, "ts")));
    CHECK_STR(json_string_value(json_object_get(json_object_get(l, "line"), "trace_id")), TRACE);
    json_decref(body);
}

static void test_bad_parameters(void)
{
    static const char *const bad[] = { "level=loud", "container=db", "since=yesterday", "until=5x",
                                       "limit=0", "limit=5001", "limit=abc", "colour=red", "q=%zz",
                                       "replica=a%2Fb", "trace_id=" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        json_t *body;
        int st = get_logs(bad[i], true, &body);
        if (st != 400)
            fprintf(stderr, "query %s: status %d\n", bad[i], st);
        CHECK_INT(st, 400);
        json_t *e = json_object_get(body, "error");
        CHECK_STR(json_string_value(json_object_get(e, "code")), "invalid_query");
        CHECK(json_string_length(json_object_get(e, "message")) > 0);
        CHECK(json_is_string(json_object_get(e, "request_id")));
        json_decref(body);
    }
}

static void test_parse_time(void)
{
    int64_t ms = 0;
    CHECK_INT(logsearch_parse_time("1970-01-01T00:00:01.250Z", 24, &ms), 0);
    CHECK_INT(ms, 1250);
    CHECK_INT(logsearch_parse_time("2026-11-25T20:02:57+01:00", 25, &ms), 0);
    CHECK_INT(ms, 1795633377000LL);
    CHECK(logsearch_parse_time("2026-11-25 20:02", 16, &ms) < 0);
    CHECK(logsearch_parse_time("2026-13-25T20:02:57Z", 20, &ms) < 0);
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
    snprintf(tmpdir, sizeof tmpdir, "/tmp/strata-test-logsearch-XXXXXX");
    if (!mkdtemp(tmpdir))
        return 1;
    signal(SIGPIPE, SIG_IGN);
    make_tree();
    setenv("WORKERS", "1", 1);
    setenv("LISTEN_ADDR", "127.0.0.1:0", 1);
    setenv("SHUTDOWN_TIMEOUT_MS", "500", 1);
    setenv("LOG_LEVEL", "warn", 1);
    struct service_config cfg = { .name = "test-logsearch", .listen = "127.0.0.1:0", .workers = 1 };
    svc = service_new(&cfg);
    struct admin_auth auth = { check_token, NULL };
    if (!svc || logsearch_register(svc, logs, &auth) < 0 || service_bind(svc) < 0) {
        fprintf(stderr, "cannot start the service\n");
        rm_rf(tmpdir);
        return 1;
    }
    port = service_port(svc);
    pthread_create(&svc_thread, NULL, svc_main, NULL);
    RUN(test_parse_time);
    RUN(test_auth);
    RUN(test_workload_in_time_order);
    RUN(test_filters);
    RUN(test_limit_and_shape);
    RUN(test_bad_parameters);
    service_shutdown(svc);
    pthread_join(svc_thread, NULL);
    service_free(svc);
    rm_rf(tmpdir);
    return check_done();
}
