/* Metrics: registration rules, children, hot-path atomics, exposition, and
 * the real `promtool check metrics` on what we render. */
#include <errno.h>
#include <locale.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "core/buf.h"
#include "core/metrics.h"

#define RENDER_MAX (4u << 20)

/* Renders r into a NUL-terminated heap string (caller frees). */
static char *render(struct metrics_registry *r)
{
    struct buf b;
    buf_init(&b, RENDER_MAX);
    int rc = metrics_render(r, &b);
    CHECK_INT(rc, 0);
    char *s = malloc(buf_len(&b) + 1);
    if (buf_len(&b))
        memcpy(s, buf_rptr(&b), buf_len(&b));
    s[buf_len(&b)] = '\0';
    buf_free(&b);
    return s;
}

/* The value on the line that starts with series + " ", or NAN. */
static double sample(const char *text, const char *series)
{
    size_t n = strlen(series);
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        if (strncmp(p, series, n) == 0 && p[n] == ' ')
            return strtod(p + n + 1, NULL);
    }
    return NAN;
}

static bool contains_line(const char *text, const char *line)
{
    size_t n = strlen(line);
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
        if (strncmp(p, line, n) == 0 && (p[n] == '\n' || p[n] == '\0'))
            return true;
    return false;
}

#define CHECK_LINE(text, line)                                                               \
    do {                                                                                     \
        check_count++;                                                                       \
        if (!contains_line((text), (line))) {                                                \
            check_failures++;                                                                \
            fprintf(stderr, "%s:%d: line missing: %s\n--- output ---\n%s--------------\n",   \
                    __FILE__, __LINE__, (line), (text));                                     \
        }                                                                                    \
    } while (0)

static void test_registration_errors(void)
{
    struct metrics_registry *r = metrics_registry_new();
    struct metrics_family *f = NULL, *g = NULL;
    const char *h = "Help.";

    /* names */
    CHECK_INT(metrics_register_counter(r, "requests", h, NULL, &f), -EINVAL); /* no _total */
    CHECK_INT(metrics_register_gauge(r, "open_total", h, NULL, &f), -EINVAL);
    CHECK_INT(metrics_register_histogram(r, "lat_total", h, NULL, NULL, 0, &f), -EINVAL);
    CHECK_INT(metrics_register_gauge(r, "", h, NULL, &f), -EINVAL);
    CHECK_INT(metrics_register_gauge(r, "1abc", h, NULL, &f), -EINVAL);
    CHECK_INT(metrics_register_gauge(r, "a-b", h, NULL, &f), -EINVAL);
    CHECK_INT(metrics_register_gauge(r, "a b", h, NULL, &f), -EINVAL);
    CHECK_INT(metrics_register_gauge(r, "fooBar", h, NULL, &f), -EINVAL);
    CHECK_INT(metrics_register_gauge(r, "rule:ratio", h, NULL, &f), -EINVAL);
    CHECK_INT(metrics_register_gauge(r, "__reserved", h, NULL, &f), -EINVAL);
    CHECK_INT(metrics_register_gauge(r, "queue_sum", h, NULL, &f), -EINVAL);
    CHECK_INT(metrics_register_gauge(r, "queue_count", h, NULL, &f), -EINVAL);
    CHECK_INT(metrics_register_counter(r, NULL, h, NULL, &f), -EINVAL);
    char longname[300];
    memset(longname, 'a', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    CHECK_INT(metrics_register_gauge(r, longname, h, NULL, &f), -EINVAL);
    /* help */
    CHECK_INT(metrics_register_gauge(r, "g", "", NULL, &f), -EINVAL);
    CHECK_INT(metrics_register_gauge(r, "g", NULL, NULL, &f), -EINVAL);
    CHECK_INT(metrics_register_gauge(r, "g", "bad \xff utf8", NULL, &f), -EINVAL);
    CHECK_INT(metrics_register_gauge(r, "g", "overlong \xc0\xaf", NULL, &f), -EINVAL);
    /* labels */
    CHECK_INT(metrics_register_gauge(r, "g", h, METRICS_LABELS("le"), &f), -EINVAL);
    CHECK_INT(metrics_register_gauge(r, "g", h, METRICS_LABELS("__name"), &f), -EINVAL);
    CHECK_INT(metrics_register_gauge(r, "g", h, METRICS_LABELS("a-b"), &f), -EINVAL);
    CHECK_INT(metrics_register_gauge(r, "g", h, METRICS_LABELS("Method"), &f), -EINVAL);
    CHECK_INT(metrics_register_gauge(r, "g", h, METRICS_LABELS(""), &f), -EINVAL);
    CHECK_INT(metrics_register_gauge(r, "g", h, METRICS_LABELS("a", "b", "a"), &f), -EINVAL);
    CHECK_INT(metrics_register_gauge(r, "g", h,
                                     METRICS_LABELS("l0", "l1", "l2", "l3", "l4", "l5", "l6",
                                                    "l7", "l8", "l9", "l10", "l11", "l12",
                                                    "l13", "l14", "l15", "l16"),
                                     &f),
              -EINVAL);
    /* buckets */
    double dup[] = { 1, 1 }, down[] = { 2, 1 }, nan_b[] = { 1, NAN }, ninf[] = { -INFINITY, 1 };
    CHECK_INT(metrics_register_histogram(r, "h", h, NULL, dup, 2, &f), -EINVAL);
    CHECK_INT(metrics_register_histogram(r, "h", h, NULL, down, 2, &f), -EINVAL);
    CHECK_INT(metrics_register_histogram(r, "h", h, NULL, nan_b, 2, &f), -EINVAL);
    CHECK_INT(metrics_register_histogram(r, "h", h, NULL, ninf, 2, &f), -EINVAL);
    double many[METRICS_MAX_BUCKETS + 1];
    for (int i = 0; i <= METRICS_MAX_BUCKETS; i++)
        many[i] = i;
    CHECK_INT(metrics_register_histogram(r, "h", h, NULL, many, METRICS_MAX_BUCKETS + 1, &f),
              -EINVAL);
    CHECK_INT(metrics_register_histogram(r, "h", h, NULL, many, METRICS_MAX_BUCKETS, &f), 0);

    /* nothing half-registered survived the errors above */
    char *text = render(r);
    CHECK(strstr(text, "# TYPE g ") == NULL);
    CHECK(strstr(text, "requests") == NULL);
    free(text);

    /* collisions between series names */
    CHECK_INT(metrics_register_histogram(r, "h", h, NULL, NULL, 0, &f), -EEXIST);
    CHECK_INT(metrics_register_gauge(r, "h", h, NULL, &f), -EEXIST);
    CHECK_INT(metrics_register_histogram(r, "x", h, NULL, NULL, 0, &f), 0);
    CHECK_INT(metrics_register_counter(r, "x_bucket_total", h, NULL, &f), 0);
    CHECK_INT(metrics_register_histogram(r, "x_bucket", h, NULL, NULL, 0, &f), -EEXIST);
    CHECK_INT(metrics_register_counter(r, "strata_metrics_cardinality_overflow_total", h, NULL, &f),
              -EEXIST);
    CHECK_INT(metrics_gauge_func(r, "fn_gauge", h, NULL, NULL), -EINVAL);

    /* a trailing +Inf bucket is the implicit one */
    double with_inf[] = { 0.5, INFINITY };
    CHECK_INT(metrics_register_histogram(r, "inf_hist", h, NULL, with_inf, 2, &f), 0);
    struct metrics_histogram *ih = metrics_histogram_with(f);
    metrics_histogram_observe(ih, 3);
    text = render(r);
    CHECK_LINE(text, "inf_hist_bucket{le=\"0.5\"} 0");
    CHECK_LINE(text, "inf_hist_bucket{le=\"+Inf\"} 1");
    CHECK(strstr(text, "le=\"+Inf\"} 0\ninf_hist_bucket{le=\"+Inf\"}") == NULL);
    free(text);

    /* children: kind and arity must match */
    CHECK_INT(metrics_register_counter(r, "c_total", h, METRICS_LABELS("a", "b"), &f), 0);
    CHECK_INT(metrics_register_gauge(r, "gg", h, NULL, &g), 0);
    CHECK(metrics_counter_with(f, "1", "2") != NULL);
    CHECK(metrics_counter_with(f, "1", "2") == metrics_counter_with(f, "1", "2"));
    CHECK(metrics_counter_with(f, "1") == NULL);
    CHECK(metrics_counter_with(f, "1", "2", "3") == NULL);
    CHECK(metrics_counter_with(f) == NULL);
    CHECK(metrics_counter_with(f, "1", NULL) == NULL);
    CHECK(metrics_gauge_with(f, "1", "2") == NULL);
    CHECK(metrics_histogram_with(f, "1", "2") == NULL);
    CHECK(metrics_gauge_with(g) != NULL);
    CHECK(metrics_counter_with(g) == NULL);
    CHECK(metrics_counter_withv(NULL, NULL, 0) == NULL);
    CHECK_INT(metrics_family_set_max_children(f, 0), -EINVAL);

    /* NULL children are no-ops, not crashes */
    metrics_counter_add(NULL, 1);
    metrics_counter_add_float(NULL, 1);
    metrics_gauge_set(NULL, 1);
    metrics_gauge_add(NULL, 1);
    metrics_histogram_observe(NULL, 1);
    CHECK(metrics_counter_value(NULL) == 0);
    metrics_registry_free(r);
}

static void test_escaping(void)
{
    struct metrics_registry *r = metrics_registry_new();
    struct metrics_family *f;
    CHECK_INT(metrics_register_counter(r, "esc_total", "Back\\slash, \"quotes\"\nand newline.",
                                       METRICS_LABELS("path"), &f),
              0);
    metrics_counter_add(metrics_counter_with(f, "a\\b\"c\nd"), 3);
    metrics_counter_add(metrics_counter_with(f, "plain"), 1);
    metrics_counter_add(metrics_counter_with(f, ""), 2);
    metrics_counter_add(metrics_counter_with(f, "caf\xc3\xa9 \xe2\x82\xac"), 4);
    char *text = render(r);
    CHECK_LINE(text, "# HELP esc_total Back\\\\slash, \"quotes\"\\nand newline.");
    CHECK_LINE(text, "# TYPE esc_total counter");
    CHECK_LINE(text, "esc_total{path=\"a\\\\b\\\"c\\nd\"} 3");
    CHECK_LINE(text, "esc_total{path=\"plain\"} 1");
    CHECK_LINE(text, "esc_total{path=\"\"} 2");
    CHECK_LINE(text, "esc_total{path=\"caf\xc3\xa9 \xe2\x82\xac\"} 4");
    free(text);
    metrics_registry_free(r);
}

static void test_histogram_math(void)
{
    struct metrics_registry *r = metrics_registry_new();
    struct metrics_family *f;
    double b[] = { 0.1, 0.5, 1 };
    CHECK_INT(metrics_register_histogram(r, "lat_seconds", "Latency.", METRICS_LABELS("route"), b,
                                         3, &f),
              0);
    struct metrics_histogram *h = metrics_histogram_with(f, "users");
    double obs[] = { 0.05, 0.1 /* le is inclusive */, 0.3, 1, 2, 100, -1, NAN /* ignored */ };
    for (size_t i = 0; i < sizeof obs / sizeof obs[0]; i++)
        metrics_histogram_observe(h, obs[i]);
    CHECK_INT(metrics_histogram_count(h), 7);
    CHECK(fabs(metrics_histogram_sum(h) - 102.45) < 1e-9);
    char *text = render(r);
    CHECK_LINE(text, "# TYPE lat_seconds histogram");
    CHECK_LINE(text, "lat_seconds_bucket{route=\"users\",le=\"0.1\"} 3");
    CHECK_LINE(text, "lat_seconds_bucket{route=\"users\",le=\"0.5\"} 4");
    CHECK_LINE(text, "lat_seconds_bucket{route=\"users\",le=\"1\"} 5");
    CHECK_LINE(text, "lat_seconds_bucket{route=\"users\",le=\"+Inf\"} 7");
    CHECK_LINE(text, "lat_seconds_count{route=\"users\"} 7");
    CHECK(fabs(sample(text, "lat_seconds_sum{route=\"users\"}") - 102.45) < 1e-9);
    free(text);

    /* default buckets */
    struct metrics_family *d;
    CHECK_INT(metrics_register_histogram(r, "d_seconds", "D.", NULL, NULL, 0, &d), 0);
    metrics_histogram_observe(metrics_histogram_with(d), 0.003);
    text = render(r);
    const char *les[] = { "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05",
                          "0.1",    "0.25",  "0.5",    "1",     "2.5",  "5",     "10" };
    for (size_t i = 0; i < sizeof les / sizeof les[0]; i++) {
        char line[96];
        snprintf(line, sizeof line, "d_seconds_bucket{le=\"%s\"} %d", les[i], i >= 3);
        CHECK_LINE(text, line);
    }
    CHECK_LINE(text, "d_seconds_bucket{le=\"+Inf\"} 1");
    CHECK_LINE(text, "d_seconds_sum 0.003");
    CHECK_LINE(text, "d_seconds_count 1");
    free(text);
    metrics_registry_free(r);
}

/* ---- concurrency ---- */

enum { THREADS = 4, PER_THREAD = 100000 };

struct conc {
    struct metrics_registry *r;
    struct metrics_family *fam;
    struct metrics_counter *c;
    struct metrics_counter *secs;
    struct metrics_gauge *g;
    struct metrics_histogram *h;
    int id;
    _Atomic int *done;
};

static void *conc_worker(void *arg)
{
    struct conc *x = arg;
    for (int i = 0; i < PER_THREAD; i++) {
        metrics_counter_add(x->c, 1);
        metrics_counter_add_float(x->secs, 0.5);
        metrics_gauge_add(x->g, 1);
        metrics_histogram_observe(x->h, (i % 4) * 0.3); /* 0, .3, .6, .9 */
        if (i % 10000 == 0) {
            /* first-use lookups of new children while others update */
            char v[32];
            snprintf(v, sizeof v, "t%d-%d", x->id, i);
            metrics_counter_add(metrics_counter_with(x->fam, v), 1);
        }
    }
    atomic_fetch_add(x->done, 1);
    return NULL;
}

static void *conc_scraper(void *arg)
{
    struct conc *x = arg;
    struct buf b;
    buf_init(&b, RENDER_MAX);
    int scrapes = 0;
    while (atomic_load(x->done) < THREADS || scrapes == 0) {
        buf_reset(&b);
        if (metrics_render(x->r, &b) != 0)
            break;
        scrapes++;
    }
    buf_free(&b);
    return (void *)(intptr_t)scrapes;
}

static void test_concurrent_increments(void)
{
    struct metrics_registry *r = metrics_registry_new();
    struct metrics_family *fc, *fs, *fg, *fh, *fam;
    double b[] = { 0.5 };
    CHECK_INT(metrics_register_counter(r, "hits_total", "Hits.", NULL, &fc), 0);
    CHECK_INT(metrics_register_counter(r, "busy_seconds_total", "Busy.", NULL, &fs), 0);
    CHECK_INT(metrics_register_gauge(r, "level", "Level.", NULL, &fg), 0);
    CHECK_INT(metrics_register_histogram(r, "obs_seconds", "Obs.", NULL, b, 1, &fh), 0);
    CHECK_INT(metrics_register_counter(r, "new_total", "New.", METRICS_LABELS("k"), &fam), 0);
    _Atomic int done = 0;
    struct conc x[THREADS + 1];
    pthread_t t[THREADS + 1];
    for (int i = 0; i <= THREADS; i++) {
        x[i] = (struct conc){ r,
                              fam,
                              metrics_counter_with(fc),
                              metrics_counter_with(fs),
                              metrics_gauge_with(fg),
                              metrics_histogram_with(fh),
                              i,
                              &done };
        pthread_create(&t[i], NULL, i < THREADS ? conc_worker : conc_scraper, &x[i]);
    }
    void *scrapes;
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    pthread_join(t[THREADS], &scrapes);
    CHECK((intptr_t)scrapes > 0);

    const double total = (double)THREADS * PER_THREAD;
    CHECK(metrics_counter_value(x[0].c) == total);
    CHECK(metrics_counter_value(x[0].secs) == total / 2);
    CHECK(metrics_gauge_value(x[0].g) == total);
    CHECK_INT(metrics_histogram_count(x[0].h), THREADS * PER_THREAD);
    /* per thread: 25k each of 0, .3, .6, .9 → sum 45000 (±rounding) */
    CHECK(fabs(metrics_histogram_sum(x[0].h) - THREADS * 45000.0) < 1e-3);
    char *text = render(r);
    CHECK_LINE(text, "hits_total 400000");
    CHECK_LINE(text, "busy_seconds_total 200000");
    CHECK_LINE(text, "level 400000");
    CHECK_LINE(text, "obs_seconds_bucket{le=\"0.5\"} 200000");
    CHECK_LINE(text, "obs_seconds_bucket{le=\"+Inf\"} 400000");
    CHECK_LINE(text, "obs_seconds_count 400000");
    CHECK_LINE(text, "new_total{k=\"t3-90000\"} 1");
    free(text);
    metrics_registry_free(r);
}

static void test_cardinality_bound(void)
{
    struct metrics_registry *r = metrics_registry_new();
    struct metrics_family *f, *d;
    CHECK_INT(metrics_register_counter(r, "by_user_total", "Per user.", METRICS_LABELS("user"), &f),
              0);
    CHECK_INT(metrics_family_set_max_children(f, 3), 0);
    struct metrics_counter *a = metrics_counter_with(f, "a");
    CHECK(a != NULL);
    CHECK(metrics_counter_with(f, "b") != NULL);
    CHECK(metrics_counter_with(f, "c") != NULL);
    CHECK(metrics_counter_with(f, "d") == NULL); /* past the bound */
    CHECK(metrics_counter_with(f, "e") == NULL);
    CHECK(metrics_counter_with(f, "a") == a); /* existing children still found */
    metrics_counter_add(metrics_counter_with(f, "d"), 5); /* NULL: no-op */
    /* invalid values: refused and counted separately */
    CHECK(metrics_counter_with(f, "bad \xff") == NULL);
    char big[METRICS_MAX_LABEL_VALUE + 2];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    CHECK(metrics_counter_with(f, big) == NULL);

    /* the default bound is 1000 */
    CHECK_INT(metrics_register_gauge(r, "by_id", "Per id.", METRICS_LABELS("id"), &d), 0);
    int ok = 0;
    for (int i = 0; i < METRICS_DEFAULT_MAX_CHILDREN + 5; i++) {
        char v[16];
        snprintf(v, sizeof v, "%d", i);
        ok += metrics_gauge_with(d, v) != NULL;
    }
    CHECK_INT(ok, METRICS_DEFAULT_MAX_CHILDREN);

    char *text = render(r);
    CHECK_LINE(text, "# TYPE strata_metrics_cardinality_overflow_total counter");
    CHECK_LINE(text,
               "strata_metrics_cardinality_overflow_total{metric=\"by_user_total\",reason=\"limit\"} 3");
    CHECK_LINE(
        text,
        "strata_metrics_cardinality_overflow_total{metric=\"by_user_total\",reason=\"invalid_value\"} 2");
    CHECK_LINE(text, "strata_metrics_cardinality_overflow_total{metric=\"by_id\",reason=\"limit\"} 5");
    CHECK(strstr(text, "by_user_total{user=\"d\"}") == NULL);
    free(text);
    metrics_registry_free(r);
}

static void test_process_metrics(void)
{
    struct metrics_registry *r = metrics_registry_new();
    CHECK_INT(metrics_register_process(r), 0);
    CHECK_INT(metrics_register_process(r), -EEXIST);
    volatile double burn = 0;
    for (int i = 0; i < 2000000; i++)
        burn += i * 0.5;
    CHECK(burn > 0); /* some CPU time to report */
    char *text = render(r);
    double cpu = sample(text, "process_cpu_seconds_total");
    double rss = sample(text, "process_resident_memory_bytes");
    double vsz = sample(text, "process_virtual_memory_bytes");
    double fds = sample(text, "process_open_fds");
    double maxfds = sample(text, "process_max_fds");
    double start = sample(text, "process_start_time_seconds");
    double now = (double)time(NULL);
    CHECK(cpu > 0 && cpu < 3600);
    CHECK(rss > 100 * 1024 && rss < 64.0 * 1024 * 1024 * 1024);
    CHECK(vsz >= rss);
    CHECK(fds >= 3 && fds < 100000); /* stdin, stdout, stderr at least */
    CHECK(maxfds >= fds);
    CHECK(start > now - 3600 && start <= now + 1);
    CHECK_LINE(text, "# TYPE process_cpu_seconds_total counter");
    CHECK_LINE(text, "# TYPE process_open_fds gauge");

    /* one more fd open shows up in the next scrape */
    int extra = dup(2);
    char *text2 = render(r);
    CHECK(sample(text2, "process_open_fds") == fds + 1);
    close(extra);
    free(text2);
    if (check_failures)
        fprintf(stderr, "%s", text);
    free(text);
    metrics_registry_free(r);

    /* the default registry comes with them, once */
    struct metrics_registry *def = metrics_default();
    CHECK(def != NULL);
    CHECK(metrics_default() == def);
    text = render(def);
    CHECK(sample(text, "process_open_fds") >= 3);
    CHECK(strstr(text, "# TYPE process_start_time_seconds gauge\n") != NULL);
    free(text);
}

static double conn_count(void *arg) { return (double)*(int *)arg; }

static void test_exact_text(void)
{
    struct metrics_registry *r = metrics_registry_new();
    struct metrics_family *req, *inflight, *lat;
    static int conns = 7;
    double b[] = { 0.01, 0.1 };
    CHECK_INT(metrics_register_counter(r, "strata_http_requests_total", "HTTP requests served.",
                                       METRICS_LABELS("method", "code"), &req),
              0);
    CHECK_INT(metrics_register_gauge(r, "strata_http_inflight_requests", "Requests in flight.",
                                     NULL, &inflight),
              0);
    CHECK_INT(metrics_gauge_func(r, "strata_connections", "Open client connections.", conn_count,
                                 &conns),
              0);
    CHECK_INT(metrics_register_histogram(r, "strata_http_request_duration_seconds",
                                         "Request latency.", METRICS_LABELS("route"), b, 2, &lat),
              0);
    struct metrics_family *unused;
    CHECK_INT(metrics_register_counter(r, "strata_unused_total", "Never looked up.",
                                       METRICS_LABELS("x"), &unused),
              0);
    /* created out of order: rendered sorted by label values */
    metrics_counter_add(metrics_counter_with(req, "POST", "201"), 2);
    metrics_counter_add(metrics_counter_with(req, "GET", "200"), 10);
    metrics_counter_add(metrics_counter_with(req, "GET", "404"), 1);
    metrics_gauge_set(metrics_gauge_with(inflight), 3);
    metrics_gauge_add(metrics_gauge_with(inflight), -0.5);
    struct metrics_histogram *h = metrics_histogram_with(lat, "/v1/users");
    metrics_histogram_observe(h, 0.005);
    metrics_histogram_observe(h, 0.05);
    metrics_histogram_observe(h, 0.25);
    conns = 42;
    const char *want =
        "# HELP strata_http_requests_total HTTP requests served.\n"
        "# TYPE strata_http_requests_total counter\n"
        "strata_http_requests_total{method=\"GET\",code=\"200\"} 10\n"
        "strata_http_requests_total{method=\"GET\",code=\"404\"} 1\n"
        "strata_http_requests_total{method=\"POST\",code=\"201\"} 2\n"
        "# HELP strata_http_inflight_requests Requests in flight.\n"
        "# TYPE strata_http_inflight_requests gauge\n"
        "strata_http_inflight_requests 2.5\n"
        "# HELP strata_connections Open client connections.\n"
        "# TYPE strata_connections gauge\n"
        "strata_connections 42\n"
        "# HELP strata_http_request_duration_seconds Request latency.\n"
        "# TYPE strata_http_request_duration_seconds histogram\n"
        "strata_http_request_duration_seconds_bucket{route=\"/v1/users\",le=\"0.01\"} 1\n"
        "strata_http_request_duration_seconds_bucket{route=\"/v1/users\",le=\"0.1\"} 2\n"
        "strata_http_request_duration_seconds_bucket{route=\"/v1/users\",le=\"+Inf\"} 3\n"
        "strata_http_request_duration_seconds_sum{route=\"/v1/users\"} 0.305\n"
        "strata_http_request_duration_seconds_count{route=\"/v1/users\"} 3\n";
    char *text = render(r);
    CHECK_STR(text, want);
    free(text);

    /* rendering appends; a buffer too small fails and keeps what it had */
    struct buf small;
    buf_init(&small, 600);
    buf_append_cstr(&small, "keep");
    CHECK_INT(metrics_render(r, &small), -ENOBUFS);
    CHECK_STRV(buf_str(&small), "keep");
    buf_free(&small);
    metrics_registry_free(r);
}

static void test_number_format(void)
{
    struct metrics_registry *r = metrics_registry_new();
    struct metrics_family *f, *c, *big;
    CHECK_INT(metrics_register_gauge(r, "v", "Values.", METRICS_LABELS("k"), &f), 0);
    CHECK_INT(metrics_register_counter(r, "frac_seconds_total", "Fractional.", NULL, &c), 0);
    CHECK_INT(metrics_register_counter(r, "big_total", "Past 2^53.", NULL, &big), 0);
    struct {
        const char *k;
        double v;
        const char *want;
    } cases[] = {
        { "a", 0.1, "0.1" },
        { "b", 1.0 / 3, "0.3333333333333333" },
        { "b2", 0.1 + 0.2, "0.30000000000000004" }, /* needs all 17 digits */
        { "c", 1e21, "1e+21" },
        { "d", -0.5, "-0.5" },
        { "e", 123456789, "123456789" },
        { "f", 5e-324, "4.94065645841247e-324" }, /* subnormal: reads back exactly */
        { "g", INFINITY, "+Inf" },
        { "h", -INFINITY, "-Inf" },
        { "i", NAN, "NaN" },
        { "j", 0, "0" },
        { "k", 1.7976931348623157e308, "1.7976931348623157e+308" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        metrics_gauge_set(metrics_gauge_with(f, cases[i].k), cases[i].v);
    struct metrics_counter *fc = metrics_counter_with(c);
    metrics_counter_add(fc, 2);
    metrics_counter_add_float(fc, 0.25);
    metrics_counter_add_float(fc, -1);  /* ignored */
    metrics_counter_add_float(fc, NAN); /* ignored */
    metrics_counter_add(metrics_counter_with(big), (1ULL << 53) + 1);

    for (int pass = 0; pass < 2; pass++) {
        char *text = render(r);
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
            char line[96];
            snprintf(line, sizeof line, "v{k=\"%s\"} %s", cases[i].k, cases[i].want);
            CHECK_LINE(text, line);
        }
        CHECK_LINE(text, "frac_seconds_total 2.25");
        CHECK_LINE(text, "big_total 9007199254740993");
        free(text);
        if (pass == 1)
            break;
        /* Again under a locale whose decimal point is a comma. glibc needs
         * the compiled locale; build one with localedef if we can. */
        const char *bdir = getenv("STRATA_BUILD_DIR");
        char dir[512], cmd[1200];
        snprintf(dir, sizeof dir, "%s/test-metrics-locale", bdir ? bdir : "/tmp");
        mkdir(dir, 0755);
        snprintf(cmd, sizeof cmd,
                 "localedef -i de_DE -f UTF-8 '%s/de_DE.UTF-8' >/dev/null 2>&1 || "
                 "test -d '%s/de_DE.UTF-8'",
                 dir, dir);
        setenv("LOCPATH", dir, 1);
        if (system(cmd) != 0 || !setlocale(LC_NUMERIC, "de_DE.UTF-8")) {
            fprintf(stderr, "note: de_DE locale unavailable (localedef); comma-locale pass skipped\n");
            break;
        }
        char probe[16];
        snprintf(probe, sizeof probe, "%g", 0.5);
        CHECK_STR(probe, "0,5"); /* the locale is really in force */
    }
    setlocale(LC_NUMERIC, "C");
    unsetenv("LOCPATH");
    metrics_registry_free(r);
}

/* ---- promtool ---- */

/* Runs promtool check metrics on text; returns its exit status (-1 if it
 * could not run) and what it printed in out. */
static int promtool_check(const char *text, char *out, size_t outsz)
{
    char path[] = "/tmp/strata-metrics-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0)
        return -1;
    size_t len = strlen(text);
    CHECK_INT(write(fd, text, len), (long long)len);
    close(fd);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "promtool check metrics < '%s' 2>&1", path);
    FILE *p = popen(cmd, "r");
    size_t n = 0;
    if (p) {
        size_t k;
        while (n + 1 < outsz && (k = fread(out + n, 1, outsz - 1 - n, p)) > 0)
            n += k;
    }
    out[n] = '\0';
    int st = p ? pclose(p) : -1;
    unlink(path);
    return st == -1 ? -1 : WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_promtool_check(void)
{
    if (system("promtool --version >/dev/null 2>&1") != 0) {
        check_count++;
        check_failures++;
        fprintf(stderr, "%s:%d: promtool not found: install Debian's 'prometheus' package "
                        "(scripts install it); the rendered text cannot be checked without it\n",
                __FILE__, __LINE__);
        return;
    }
    char said[8192];

    /* the check can fail: a counter without _total is a lint problem */
    int st = promtool_check("# HELP bad A counter.\n# TYPE bad counter\nbad 1\n", said,
                            sizeof said);
    CHECK(st != 0 && said[0] != '\0');

    /* everything the registry can produce */
    struct metrics_registry *r = metrics_registry_new();
    struct metrics_family *req, *lat, *g, *secs, *cap;
    static int conns = 3;
    CHECK_INT(metrics_register_process(r), 0);
    CHECK_INT(metrics_register_counter(r, "strata_http_requests_total", "HTTP requests served.",
                                       METRICS_LABELS("method", "code", "route"), &req),
              0);
    CHECK_INT(metrics_register_histogram(r, "strata_http_request_duration_seconds",
                                         "Request latency, \"quoted\" \\ and\nsplit.",
                                         METRICS_LABELS("route"), NULL, 0, &lat),
              0);
    CHECK_INT(metrics_register_gauge(r, "strata_upstream_weight", "Weights.",
                                     METRICS_LABELS("upstream"), &g),
              0);
    CHECK_INT(metrics_register_counter(r, "strata_worker_busy_seconds_total", "Busy time.",
                                       METRICS_LABELS("worker"), &secs),
              0);
    CHECK_INT(metrics_gauge_func(r, "strata_connections", "Open connections.", conn_count, &conns),
              0);
    CHECK_INT(metrics_register_counter(r, "strata_capped_total", "Capped.",
                                       METRICS_LABELS("k"), &cap),
              0);
    metrics_family_set_max_children(cap, 1);
    metrics_counter_add(metrics_counter_with(cap, "one"), 1);
    CHECK(metrics_counter_with(cap, "two") == NULL); /* overflow family shows up */
    metrics_counter_add(metrics_counter_with(req, "GET", "200", "/v1/users/{id}"), 5);
    metrics_counter_add(metrics_counter_with(req, "POST", "422", "a\\b\"c\nd \xc3\xa9"), 1);
    struct metrics_histogram *h = metrics_histogram_with(lat, "/v1/orders");
    for (int i = 0; i < 100; i++)
        metrics_histogram_observe(h, i * 0.013);
    metrics_histogram_with(lat, "/idle"); /* all zero */
    metrics_gauge_set(metrics_gauge_with(g, "a"), 0.1);
    metrics_gauge_set(metrics_gauge_with(g, "b"), INFINITY);
    metrics_gauge_set(metrics_gauge_with(g, "c"), -INFINITY);
    metrics_gauge_set(metrics_gauge_with(g, "d"), NAN);
    metrics_gauge_set(metrics_gauge_with(g, "e"), 1e-300);
    metrics_counter_add_float(metrics_counter_with(secs, "0"), 1.0 / 3);
    char *text = render(r);
    st = promtool_check(text, said, sizeof said);
    CHECK_INT(st, 0);
    CHECK_STR(said, "");
    if (st != 0 || said[0])
        fprintf(stderr, "promtool said (exit %d):\n%s\n--- input ---\n%s", st, said, text);
    free(text);
    metrics_registry_free(r);
}

int main(void)
{
    RUN(test_registration_errors);
    RUN(test_escaping);
    RUN(test_histogram_math);
    RUN(test_concurrent_increments);
    RUN(test_cardinality_bound);
    RUN(test_process_metrics);
    RUN(test_exact_text);
    RUN(test_number_format);
    RUN(test_promtool_check);
    return check_done();
}
