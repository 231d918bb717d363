/* The Loki shipper (logship.c) against an in-process Loki push receiver
 * (an http1_server on its own thread that gunzips and checks every push):
 * lines of several streams arrive once with their labels and timestamps,
 * a rotation mid-way loses and repeats nothing, 500s are retried, a 400
 * drops its batch (counted), and a restart resumes from the state file.
 *
 * Driver mode (LOGSHIP_DRIVER=1, for tests/integration/test_logship.sh):
 * runs logship_start on a loop with LOKI_URL, LOGSHIP_LOGS (the logs dir)
 * and LOGSHIP_STATE (the positions file) until SIGTERM, writing the
 * Prometheus metrics to LOGSHIP_METRICS every 200 ms and at exit. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "check.h"
#include "control/logsearch.h"
#include "control/logship.h"
#include "core/json.h"
#include "core/log.h"
#include "core/metrics.h"
#include "support/test_server.h"

/* ---- driver mode ------------------------------------------------------------------ */

static struct loop_timer metrics_timer;
static const char *metrics_path;

static void write_metrics(void)
{
    struct buf b;
    buf_init(&b, 1 << 22);
    if (metrics_render(metrics_default(), &b) == 0) {
        char tmp[4200];
        snprintf(tmp, sizeof tmp, "%s.tmp", metrics_path);
        FILE *f = fopen(tmp, "w");
        if (f) {
            fwrite(buf_rptr(&b), 1, buf_len(&b), f);
            fclose(f);
            rename(tmp, metrics_path);
        }
    }
    buf_free(&b);
}

static void metrics_tick(struct loop_timer *t)
{
    write_metrics();
    loop_timer_start(t, 200);
}

static void on_term(struct loop_signal *sig, int signo)
{
    (void)signo;
    loop_stop(sig->loop);
}

static int driver(void)
{
    const char *url = getenv("LOKI_URL"), *dir = getenv("LOGSHIP_LOGS");
    metrics_path = getenv("LOGSHIP_METRICS");
    if (!url || !dir || !metrics_path) {
        fprintf(stderr, "driver mode needs LOKI_URL, LOGSHIP_LOGS, LOGSHIP_METRICS\n");
        return 2;
    }
    char err[256];
    if (logship_check_url(url, err, sizeof err) < 0) {
        fprintf(stderr, "%s\n", err);
        return 2;
    }
    log_init("test-logship");
    struct loop *l = loop_new();
    struct loop_signal s_term, s_int;
    loop_signal_start(l, &s_term, SIGTERM, on_term, NULL);
    loop_signal_start(l, &s_int, SIGINT, on_term, NULL);
    struct http1_client *c = http1_client_new(l, NULL);
    struct logship_config cfg = { .state_file = getenv("LOGSHIP_STATE") };
    /* the test's patience: its outage lasts seconds, not minutes */
    if (getenv("LOGSHIP_BACKOFF_MAX_MS"))
        cfg.backoff_max_ms = (uint32_t)atoi(getenv("LOGSHIP_BACKOFF_MAX_MS"));
    struct logship *ls = logship_start(l, c, dir, url, &cfg);
    if (!ls)
        return 1;
    loop_timer_init(l, &metrics_timer, metrics_tick, NULL);
    loop_timer_start(&metrics_timer, 0);
    loop_run(l);
    loop_timer_stop(&metrics_timer);
    logship_stop(ls);
    write_metrics();
    http1_client_free(c);
    loop_signal_stop(&s_term);
    loop_signal_stop(&s_int);
    loop_run_once(l, 0);
    loop_free(l);
    return 0;
}

/* ---- the receiver --------------------------------------------------------------------- */

#define MAX_LINES 256

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct {
    char *line[MAX_LINES];
    char labels[MAX_LINES][200];
    long long ns[MAX_LINES];
    int n;
    int pushes, bad_pushes;
    int fail_next;   /* answer 500 to this many pushes */
    int reject_next; /* answer 400 to this many pushes */
} rx;

static int gunzip(struct str in, char **out, size_t *outn)
{
    z_stream z = { 0 };
    if (inflateInit2(&z, 15 + 16) != Z_OK)
        return -1;
    size_t cap = 1 << 16, n = 0;
    char *p = malloc(cap);
    z.next_in = (Bytef *)in.p;
    z.avail_in = (uInt)in.n;
    int rc;
    do {
        if (n == cap) {
            cap *= 2;
            p = realloc(p, cap);
        }
        z.next_out = (Bytef *)p + n;
        z.avail_out = (uInt)(cap - n);
        rc = inflate(&z, Z_NO_FLUSH);
        n = cap - z.avail_out;
    } while (rc == Z_OK);
    inflateEnd(&z);
    if (rc != Z_STREAM_END) {
        free(p);
        return -1;
    }
    *out = p;
    *outn = n;
    return 0;
}

static bool header_is(const struct http1_request *r, const char *name, const char *value)
{
    for (size_t i = 0; i < r->nheaders; i++)
        if (str_eq_nocase(r->headers[i].name, str_from_cstr(name)))
            return str_eq_nocase(r->headers[i].value, str_from_cstr(value));
    return false;
}

/* Loki's push API: {"streams":[{"stream":{string:string},"values":[[ns-string, string]]}]} */
static bool record_push(json_t *doc)
{
    json_t *streams = json_object_get(doc, "streams"), *st;
    size_t i;
    if (!json_is_array(streams) || json_array_size(streams) == 0)
        return false;
    json_array_foreach(streams, i, st)
    {
        json_t *labels = json_object_get(st, "stream"), *values = json_object_get(st, "values"), *v;
        if (!json_is_object(labels) || !json_is_array(values) || json_array_size(values) == 0)
            return false;
        char lab[200];
        const char *k;
        json_t *lv;
        size_t ln = 0;
        json_object_foreach(labels, k, lv)
        {
            if (!json_is_string(lv))
                return false;
            ln += (size_t)snprintf(lab + ln, sizeof lab - ln, "%s=%s,", k, json_string_value(lv));
            if (ln >= sizeof lab)
                return false;
        }
        long long prev = 0;
        size_t j;
        json_array_foreach(values, j, v)
        {
            const char *ns = json_string_value(json_array_get(v, 0));
            const char *line = json_string_value(json_array_get(v, 1));
            if (json_array_size(v) != 2 || !ns || !line || !*ns || strspn(ns, "0123456789") != strlen(ns))
                return false;
            long long t = atoll(ns);
            if (t < prev)
                return false;
            prev = t;
            if (rx.n < MAX_LINES) {
                rx.line[rx.n] = strdup(line);
                snprintf(rx.labels[rx.n], sizeof rx.labels[0], "%s", lab);
                rx.ns[rx.n] = t;
                rx.n++;
            }
        }
    }
    return true;
}

static void loki(struct http1_exchange *x, void *arg)
{
    (void)arg;
    pthread_mutex_lock(&mu);
    rx.pushes++;
    int status = 204;
    char *text = NULL;
    size_t n;
    if (rx.fail_next > 0) {
        rx.fail_next--;
        status = 500;
    } else if (rx.reject_next > 0) {
        rx.reject_next--;
        status = 400;
    } else if (!str_eq(x->req.method, STR_LIT("POST")) || !str_eq(x->req.path, STR_LIT("/loki/api/v1/push")) ||
               !header_is(&x->req, "Content-Type", "application/json") ||
               !header_is(&x->req, "Content-Encoding", "gzip") || gunzip(x->body, &text, &n) < 0) {
        status = 415;
    } else {
        json_t *doc = json_loadb(text, n, JSON_REJECT_DUPLICATES, NULL);
        if (!doc || !record_push(doc))
            status = 422;
        json_decref(doc);
    }
    if (status == 415 || status == 422)
        rx.bad_pushes++;
    free(text);
    pthread_mutex_unlock(&mu);
    http1_respond(x, status, NULL, 0, status == 204 ? STR_NULL : STR_LIT("no"));
}

static int count_line(const char *needle, char *labels_out, long long *ns_out)
{
    int c = 0;
    pthread_mutex_lock(&mu);
    for (int i = 0; i < rx.n; i++)
        if (strstr(rx.line[i], needle)) {
            c++;
            if (labels_out)
                strcpy(labels_out, rx.labels[i]);
            if (ns_out)
                *ns_out = rx.ns[i];
        }
    pthread_mutex_unlock(&mu);
    return c;
}

static int received(void)
{
    pthread_mutex_lock(&mu);
    int n = rx.n;
    pthread_mutex_unlock(&mu);
    return n;
}

/* ---- the shipper on this thread's loop ------------------------------------------------------ */

static char tmpdir[256], logs[300], state[300], url[64];
static struct loop *l;
static struct http1_client *client;
static struct logship *ls;

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void start_shipper(void)
{
    struct logship_config cfg = { .state_file = state, .poll_ms = 100, .backoff_min_ms = 50, .backoff_max_ms = 200 };
    ls = logship_start(l, client, logs, url, &cfg);
    CHECK(ls != NULL);
}

/* Runs the loop until received() reaches n (or 5 s). */
static bool pump_until(int n)
{
    uint64_t end = now_ms() + 5000;
    while (received() < n && now_ms() < end)
        loop_run_once(l, 20);
    /* a little longer: anything extra (a duplicate) would show */
    uint64_t extra = now_ms() + 300;
    while (now_ms() < extra)
        loop_run_once(l, 20);
    return received() == n;
}

#define REPLICA "order-svc-1a2b3c4d-aaaaa"

static void append(const char *file, const char *text)
{
    char path[600];
    snprintf(path, sizeof path, "%s/" REPLICA "/%s", logs, file);
    FILE *f = fopen(path, "a");
    fputs(text, f);
    fclose(f);
}

static void test_ship(void)
{
    char dir[400];
    snprintf(dir, sizeof dir, "%s/" REPLICA, logs);
    mkdir(dir, 0755);
    append("app.log", "{\"ts\":\"2026-11-25T20:02:57.693Z\",\"level\":\"info\",\"msg\":\"one\"}\n"
                      "{\"ts\":\"2026-11-25T20:02:58.000Z\",\"level\":\"warning\",\"msg\":\"two\"}\n"
                      "panic: three\n");
    append("proxy.log", "{\"ts\":\"2026-11-25T20:02:59.000Z\",\"level\":\"error\",\"msg\":\"four\"}\n"
                        "{\"msg\":\"partial");
    start_shipper();
    CHECK(pump_until(4));
    char lab[200];
    long long ns = 0;
    CHECK_INT(count_line("\"one\"", lab, &ns), 1);
    CHECK_STR(lab, "workload=order-svc,replica=" REPLICA ",container=app,level=info,");
    CHECK(ns == 1795636977693000000LL);
    CHECK_INT(count_line("\"two\"", lab, NULL), 1);
    CHECK_STR(lab, "workload=order-svc,replica=" REPLICA ",container=app,level=warn,");
    CHECK_INT(count_line("panic: three", lab, NULL), 1);
    CHECK_STR(lab, "workload=order-svc,replica=" REPLICA ",container=app,level=unknown,");
    CHECK_INT(count_line("\"four\"", lab, NULL), 1);
    CHECK_STR(lab, "workload=order-svc,replica=" REPLICA ",container=proxy,level=error,");

    /* the unfinished line completes; a rotation with lines left in the old file */
    append("proxy.log", " five\"}\n");
    append("app.log", "{\"msg\":\"six\"}\n");
    char from[600], to[600];
    snprintf(from, sizeof from, "%s/app.log", dir);
    snprintf(to, sizeof to, "%s/app.log.1", dir);
    rename(from, to);
    append("app.log", "{\"msg\":\"seven\"}\n");
    CHECK(pump_until(7));
    CHECK_INT(count_line("partial five", NULL, NULL), 1);
    CHECK_INT(count_line("six", NULL, NULL), 1);
    CHECK_INT(count_line("seven", NULL, NULL), 1);
}

static void test_retry_and_reject(void)
{
    struct logship_stats st;
    pthread_mutex_lock(&mu);
    rx.fail_next = 2;
    pthread_mutex_unlock(&mu);
    append("app.log", "{\"msg\":\"eight\"}\n");
    CHECK(pump_until(8));
    CHECK_INT(count_line("eight", NULL, NULL), 1);
    logship_stats(ls, &st);
    CHECK(st.retries >= 2);

    pthread_mutex_lock(&mu);
    rx.reject_next = 1;
    pthread_mutex_unlock(&mu);
    append("app.log", "{\"msg\":\"nine\"}\n");
    uint64_t end = now_ms() + 5000;
    do {
        loop_run_once(l, 20);
        logship_stats(ls, &st);
    } while (st.rejected == 0 && now_ms() < end);
    CHECK_INT(st.rejected, 1);
    CHECK_INT(st.dropped, 1);
    CHECK_INT(count_line("nine", NULL, NULL), 0);
}

static void test_restart_resumes(void)
{
    logship_stop(ls);
    ls = NULL;
    append("app.log", "{\"msg\":\"ten\"}\n");
    start_shipper();
    CHECK(pump_until(9));
    CHECK_INT(count_line("ten", NULL, NULL), 1);
    CHECK_INT(count_line("one", NULL, NULL), 1);
    CHECK_INT(count_line("seven", NULL, NULL), 1);
    pthread_mutex_lock(&mu);
    CHECK_INT(rx.bad_pushes, 0);
    pthread_mutex_unlock(&mu);
}

static void test_bad_urls(void)
{
    char err[256];
    CHECK_INT(logship_check_url("http://127.0.0.1:3100", err, sizeof err), 0);
    CHECK_INT(logship_check_url("http://[::1]:3100/prefix", err, sizeof err), 0);
    CHECK(logship_check_url("http://loki:3100", err, sizeof err) < 0);
    CHECK(strstr(err, "numeric") != NULL);
    CHECK(logship_check_url("https://127.0.0.1:3100", err, sizeof err) < 0);
    CHECK(logship_check_url("ftp://x", err, sizeof err) < 0);
    CHECK(logship_start(l, client, logs, "http://loki:3100", NULL) == NULL);
}

int main(void)
{
    if (getenv("LOGSHIP_DRIVER"))
        return driver();
    signal(SIGPIPE, SIG_IGN);
    setenv("LOG_LEVEL", "error", 1);
    log_init("test-logship");
    snprintf(tmpdir, sizeof tmpdir, "/tmp/strata-test-logship-XXXXXX");
    if (!mkdtemp(tmpdir))
        return 1;
    snprintf(logs, sizeof logs, "%s/logs", tmpdir);
    snprintf(state, sizeof state, "%s/logship.json", tmpdir);
    mkdir(logs, 0755);
    struct test_server ts;
    struct http1_server_config sc = { .handler = loki };
    if (test_server_start(&ts, &sc) < 0)
        return 1;
    snprintf(url, sizeof url, "http://127.0.0.1:%u", ts.port);
    l = loop_new();
    client = http1_client_new(l, NULL);
    RUN(test_bad_urls);
    RUN(test_ship);
    RUN(test_retry_and_reject);
    RUN(test_restart_resumes);
    logship_stop(ls);
    http1_client_free(client);
    loop_run_once(l, 0);
    loop_free(l);
    test_server_stop(&ts);
    for (int i = 0; i < rx.n; i++)
        free(rx.line[i]);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        return 1;
    return check_done();
}
