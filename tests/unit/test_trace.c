/* W3C Trace Context, spans, and OTLP/HTTP export against a real receiver on
 * loopback (an http1_server in the same loop). */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include "check.h"
#include "core/http1_server.h"
#include "core/log.h"
#include "core/loop.h"
#include "core/net.h"
#include "core/trace.h"

#define TID "4bf92f3577b34da6a3ce929d0e0e4736"
#define SID "00f067aa0ba902b7"
#define ZERO32 "00000000000000000000000000000000"
#define ZERO16 "0000000000000000"

/* ---- traceparent ----------------------------------------------------------- */

static int parse(const char *s, struct trace_ctx *c) { return trace_parse_traceparent(str_from_cstr(s), c); }

static void test_traceparent_valid(void)
{
    struct trace_ctx c;
    CHECK_INT(parse("00-" TID "-" SID "-01", &c), 0);
    CHECK_STR(c.trace_id, TID);
    CHECK_STR(c.span_id, SID);
    CHECK_INT(c.flags, 1);
    CHECK_INT(parse("00-" TID "-" SID "-00", &c), 0);
    CHECK_INT(c.flags, 0);
    CHECK_INT(parse("00-" TID "-" SID "-ff", &c), 0); /* unknown flags are read, not refused */
    CHECK_INT(c.flags, 0xff);
    /* Future versions: 55 bytes, or more after a '-'; only version 00's fields are used. */
    CHECK_INT(parse("01-" TID "-" SID "-01", &c), 0);
    CHECK_STR(c.trace_id, TID);
    CHECK_INT(parse("cc-" TID "-" SID "-01-what-the-future-will-be-like", &c), 0);
    CHECK_STR(c.span_id, SID);
    CHECK_INT(c.flags, 1);
    CHECK_INT(parse("fe-" TID "-" SID "-00-", &c), 0);
    CHECK_INT(c.flags, 0);
}

static void test_traceparent_invalid(void)
{
    static const char *const bad[] = {
        "",
        "00",
        "00-" TID "-" SID "-0",                       /* 54 bytes */
        "00-" TID "-" SID "-011",                     /* 56 bytes, version 00 */
        "00-" TID "-" SID "-01-",                     /* version 00 allows nothing more */
        "00-" TID "-" SID "-01 ",                     /* no trimming */
        " 00-" TID "-" SID "-01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-" SID "-01", /* upper case trace id */
        "00-" TID "-00F067AA0BA902B7-01",             /* upper case span id */
        "00-" TID "-" SID "-0A",                      /* upper case flags */
        "0A-" TID "-" SID "-01",                      /* upper case version */
        "00-" ZERO32 "-" SID "-01",                   /* zero trace id */
        "00-" TID "-" ZERO16 "-01",                   /* zero span id */
        "ff-" TID "-" SID "-01",                      /* version ff */
        "ff-" TID "-" SID "-01-extra",
        "01-" TID "-" SID "-01x",                     /* future version: byte 55 must be '-' */
        "01-" TID "-" SID "-0",
        "00-4bf92f3577b34da6a3ce929d0e0e473g-" SID "-01", /* non-hex */
        "00-" TID "-00f067aa0ba902bz-01",
        "00-" TID "-" SID "-0g",
        "0g-" TID "-" SID "-01",
        "00_" TID "-" SID "-01",                      /* separators */
        "00-" TID "_" SID "-01",
        "00-" TID "-" SID "_01",
        "00-" TID SID "-01--",                        /* fields shifted */
        "00--" TID "-" SID "-1",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct trace_ctx c;
        int rc = parse(bad[i], &c);
        if (rc != -EINVAL)
            fprintf(stderr, "accepted: \"%s\"\n", bad[i]);
        CHECK_INT(rc, -EINVAL);
    }
    struct trace_ctx c;
    CHECK_INT(trace_parse_traceparent(STR_NULL, &c), -EINVAL);
    /* A NUL inside is just another bad byte. */
    char nul[] = "00-" TID "-" SID "-01";
    nul[10] = '\0';
    CHECK_INT(trace_parse_traceparent(str_make(nul, sizeof nul - 1), &c), -EINVAL);
}

static void test_traceparent_round_trip(void)
{
    static const char *const good[] = {
        "00-" TID "-" SID "-01",
        "00-" TID "-" SID "-00",
        "00-00000000000000000000000000000001-0000000000000001-7f",
        "00-ffffffffffffffffffffffffffffffff-ffffffffffffffff-ff",
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        struct trace_ctx c, c2;
        char out[TRACE_TRACEPARENT_LEN + 1];
        CHECK_INT(parse(good[i], &c), 0);
        CHECK_INT(trace_format_traceparent(&c, out), 0);
        CHECK_STR(out, good[i]);
        CHECK_INT(parse(out, &c2), 0);
        CHECK(memcmp(&c, &c2, sizeof c) == 0 || (!strcmp(c.trace_id, c2.trace_id) &&
                                                !strcmp(c.span_id, c2.span_id) && c.flags == c2.flags));
    }
    /* A future version is answered with version 00. */
    struct trace_ctx c;
    char out[TRACE_TRACEPARENT_LEN + 1];
    CHECK_INT(parse("cc-" TID "-" SID "-01-more", &c), 0);
    CHECK_INT(trace_format_traceparent(&c, out), 0);
    CHECK_STR(out, "00-" TID "-" SID "-01");
    /* Invalid contexts are not formatted. */
    struct trace_ctx zero = { .trace_id = ZERO32, .span_id = SID };
    CHECK_INT(trace_format_traceparent(&zero, out), -EINVAL);
    CHECK_STR(out, "");
    struct trace_ctx empty = { 0 };
    CHECK(!trace_ctx_is_valid(&empty));
    CHECK_INT(trace_format_traceparent(&empty, out), -EINVAL);
}

static void test_tracestate_bound(void)
{
    CHECK_STRV(trace_tracestate_bound(STR_LIT("  congo=t61rcWkgMzE,rojo=00f067aa0ba902b7\t")),
               "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7");
    CHECK_STRV(trace_tracestate_bound(STR_LIT("")), "");
    /* 510 bytes of members, then one that crosses 512: cut before it. */
    char big[1200];
    size_t n = 0;
    for (int i = 0; i < 51; i++)
        n += (size_t)sprintf(big + n, "%sk%02d=vvvvv", i ? "," : "", i); /* 9 bytes + comma */
    CHECK_INT(n, 51 * 10 - 1);                                          /* 509 */
    size_t keep = n;
    n += (size_t)sprintf(big + n, ",kk=vvvvv"); /* 518: over */
    struct str r = trace_tracestate_bound(str_make(big, n));
    CHECK_INT(r.n, keep);
    CHECK(r.p == big);
    /* Exactly 512 is kept whole. */
    memset(big, 'a', 512);
    big[0] = 'k';
    big[1] = '=';
    CHECK_INT(trace_tracestate_bound(str_make(big, 512)).n, 512);
    /* One member longer than 512: nothing fits. */
    memset(big, 'a', 600);
    big[0] = 'k';
    big[1] = '=';
    CHECK_INT(trace_tracestate_bound(str_make(big, 600)).n, 0);
    /* A comma right at 512. */
    memset(big, 'a', 700);
    big[512] = ',';
    CHECK_INT(trace_tracestate_bound(str_make(big, 700)).n, 512);
}

static void test_sample_ratio(void)
{
    CHECK(trace_sample_ratio(TID, 1.0));
    CHECK(!trace_sample_ratio(TID, 0.0));
    CHECK(!trace_sample_ratio(TID, NAN));
    CHECK(trace_sample_ratio("ffffffffffffffffff00000000000000", 0.001)); /* lowest 56 bits: 0 */
    CHECK(!trace_sample_ratio("00000000000000000fffffffffffffff", 0.999));
    CHECK(trace_sample_ratio("000000000000000000" "7fffffffffffff", 0.5000001));
    CHECK(!trace_sample_ratio("000000000000000000" "80000000000000", 0.5));
    /* Random ids at 25%: the rate comes out near 25%. */
    struct trace_span *s;
    int sampled = 0;
    for (int i = 0; i < 20000; i++) {
        s = trace_span_start(NULL, "x", TRACE_SPAN_INTERNAL, NULL);
        sampled += trace_sample_ratio(trace_span_ctx(s)->trace_id, 0.25);
        trace_span_end(s);
    }
    CHECK(sampled > 4600 && sampled < 5400);
}

/* ---- spans ----------------------------------------------------------------- */

static void test_span_without_tracer(void)
{
    /* No tracer: ids for propagation only; roots are not sampled. */
    struct trace_span *root = trace_span_start(NULL, "root", TRACE_SPAN_SERVER, NULL);
    const struct trace_ctx *rc = trace_span_ctx(root);
    CHECK(trace_ctx_is_valid(rc));
    CHECK_INT(rc->flags, 0);
    CHECK(!trace_span_is_recording(root));
    CHECK_STR(trace_span_parent_id(root), "");
    CHECK_INT(trace_span_set_attr_int(root, "k", 1), 0); /* ignored */
    struct trace_span *other = trace_span_start(NULL, "root", TRACE_SPAN_SERVER, NULL);
    CHECK(strcmp(trace_span_ctx(other)->trace_id, rc->trace_id) != 0);
    trace_span_end(other);

    /* A child keeps the trace id, records the parent and inherits the flag. */
    struct trace_ctx parent;
    CHECK_INT(parse("00-" TID "-" SID "-01", &parent), 0);
    struct trace_span *child = trace_span_start(NULL, "child", TRACE_SPAN_CLIENT, &parent);
    CHECK_STR(trace_span_ctx(child)->trace_id, TID);
    CHECK_STR(trace_span_parent_id(child), SID);
    CHECK(strcmp(trace_span_ctx(child)->span_id, SID) != 0);
    CHECK(trace_ctx_is_valid(trace_span_ctx(child)));
    CHECK_INT(trace_span_ctx(child)->flags, TRACE_FLAG_SAMPLED);
    CHECK(!trace_span_is_recording(child)); /* sampled, but nothing exports */
    char tp[TRACE_TRACEPARENT_LEN + 1];
    CHECK_INT(trace_format_traceparent(trace_span_ctx(child), tp), 0);
    struct trace_ctx back;
    CHECK_INT(parse(tp, &back), 0);
    CHECK_STR(back.span_id, trace_span_ctx(child)->span_id);
    trace_span_end(child);
    trace_span_end(root);

    /* An invalid parent makes a root. */
    struct trace_ctx junk = { 0 };
    struct trace_span *s = trace_span_start(NULL, "x", TRACE_SPAN_INTERNAL, &junk);
    CHECK_STR(trace_span_parent_id(s), "");
    CHECK(trace_ctx_is_valid(trace_span_ctx(s)));
    trace_span_end(s);

    /* NULL spans are accepted everywhere. */
    CHECK(trace_span_ctx(NULL) == NULL);
    CHECK_INT(trace_span_set_attr_str(NULL, "k", STR_LIT("v")), 0);
    CHECK_INT(trace_span_set_status(NULL, TRACE_STATUS_ERROR, STR_LIT("x")), 0);
    trace_span_end(NULL);
}

/* A tracer that records (its endpoint is never reached: the loop does not run). */
static struct trace_tracer *recording_tracer(struct loop *l, double ratio)
{
    struct trace_config cfg;
    trace_config_init(&cfg);
    cfg.endpoint = "http://127.0.0.1:9";
    cfg.sample_ratio = ratio;
    cfg.flush_interval_ms = 60000;
    return trace_tracer_new(l, &cfg);
}

static void test_sampling_inheritance(void)
{
    struct loop *l = loop_new();
    struct trace_tracer *all = recording_tracer(l, 1.0), *none = recording_tracer(l, 0.0);
    CHECK(trace_tracer_is_enabled(all) && trace_tracer_is_enabled(none));
    struct trace_ctx sampled, unsampled, odd;
    parse("00-" TID "-" SID "-01", &sampled);
    parse("00-" TID "-" SID "-00", &unsampled);
    parse("00-" TID "-" SID "-ff", &odd);

    struct trace_span *s = trace_span_start(all, "r", TRACE_SPAN_SERVER, NULL);
    CHECK(trace_span_is_recording(s));
    CHECK_INT(trace_span_ctx(s)->flags, 1);
    trace_span_end(s);
    s = trace_span_start(none, "r", TRACE_SPAN_SERVER, NULL);
    CHECK(!trace_span_is_recording(s));
    CHECK_INT(trace_span_ctx(s)->flags, 0);
    trace_span_end(s);
    /* The parent decides, whatever the ratio. */
    s = trace_span_start(none, "c", TRACE_SPAN_SERVER, &sampled);
    CHECK(trace_span_is_recording(s));
    CHECK_INT(trace_span_ctx(s)->flags, 1);
    /* ...and a grandchild made from the child's context too. */
    struct trace_span *g = trace_span_start(none, "g", TRACE_SPAN_INTERNAL, trace_span_ctx(s));
    CHECK(trace_span_is_recording(g));
    CHECK_STR(trace_span_parent_id(g), trace_span_ctx(s)->span_id);
    CHECK_STR(trace_span_ctx(g)->trace_id, TID);
    trace_span_end(g);
    trace_span_end(s);
    s = trace_span_start(all, "c", TRACE_SPAN_SERVER, &unsampled);
    CHECK(!trace_span_is_recording(s));
    CHECK_INT(trace_span_ctx(s)->flags, 0);
    trace_span_end(s);
    /* Unknown flag bits are not passed on (W3C level 1). */
    s = trace_span_start(all, "c", TRACE_SPAN_SERVER, &odd);
    CHECK_INT(trace_span_ctx(s)->flags, 1);
    trace_span_end(s);
    CHECK_INT(trace_tracer_stats(all)->queued, 2); /* r and the odd-flags child */
    CHECK_INT(trace_tracer_stats(none)->queued, 2);
    trace_tracer_free(all);
    trace_tracer_free(none);
    loop_run_once(l, 0);
    loop_free(l);
}

static json_t *span_json(const struct trace_span *s)
{
    struct buf b;
    buf_init(&b, 1 << 20);
    CHECK_INT(trace_span_to_json(s, &b), 0);
    json_error_t e;
    json_t *j = json_loadb(buf_rptr(&b), buf_len(&b), JSON_REJECT_DUPLICATES, &e);
    if (!j)
        fprintf(stderr, "bad span JSON: %s: %.*s\n", e.text, (int)buf_len(&b), buf_rptr(&b));
    CHECK(j != NULL);
    buf_free(&b);
    return j;
}

/* attributes[] element value for key, or NULL. */
static json_t *attr_value(json_t *attrs, const char *key)
{
    size_t i;
    json_t *a;
    json_array_foreach(attrs, i, a) {
        if (!strcmp(json_string_value(json_object_get(a, "key")), key))
            return json_object_get(a, "value");
    }
    return NULL;
}

static const char *attr_str(json_t *attrs, const char *key)
{
    return json_string_value(json_object_get(attr_value(attrs, key), "stringValue"));
}

static void test_attributes(void)
{
    struct loop *l = loop_new();
    struct trace_tracer *t = recording_tracer(l, 1.0);
    struct trace_span *s = trace_span_start(t, "attrs", TRACE_SPAN_INTERNAL, NULL);
    CHECK_INT(trace_span_set_attr_str(s, "s", STR_LIT("v\"q\n")), 0);
    CHECK_INT(trace_span_set_attr_int(s, "i", -9007199254740993LL), 0);
    CHECK_INT(trace_span_set_attr_double(s, "d", 0.1), 0);
    CHECK_INT(trace_span_set_attr_double(s, "nan", NAN), 0);
    CHECK_INT(trace_span_set_attr_bool(s, "b", true), 0);
    CHECK_INT(trace_span_set_attr_str(s, "s", STR_LIT("replaced")), 0); /* same key: replaced */
    CHECK_INT(trace_span_set_attr_int(s, "b", 7), 0);                    /* type may change */
    /* 300 bytes → 256; a 2-byte character across the bound is left out whole. */
    char v[300];
    memset(v, 'x', sizeof v);
    CHECK_INT(trace_span_set_attr_str(s, "long", str_make(v, sizeof v)), 0);
    v[255] = (char)0xc3;
    v[256] = (char)0xa9; /* é at 255..256 */
    CHECK_INT(trace_span_set_attr_str(s, "utf8", str_make(v, sizeof v)), 0);
    CHECK_INT(trace_span_set_attr_str(s, "bad", STR_LIT("a\xff" "b")), 0);
    /* Keys: 1..128 bytes. */
    char key[200];
    memset(key, 'k', sizeof key);
    key[128] = '\0';
    CHECK_INT(trace_span_set_attr_int(s, key, 1), 0);
    key[128] = 'k';
    key[129] = '\0';
    CHECK_INT(trace_span_set_attr_int(s, key, 1), -EINVAL);
    CHECK_INT(trace_span_set_attr_int(s, "", 1), -EINVAL);
    CHECK_INT(trace_span_set_attr_int(s, NULL, 1), -EINVAL);
    /* Up to 32 (9 so far); the rest dropped and counted; replacing still
     * works when full. */
    int rc_nospc = 0;
    for (int i = 0; i < 30; i++) {
        char k[16];
        snprintf(k, sizeof k, "n%d", i);
        int rc = trace_span_set_attr_int(s, k, i);
        if (rc == -ENOSPC)
            rc_nospc++;
        else
            CHECK_INT(rc, 0);
    }
    CHECK_INT(rc_nospc, 9 + 30 - TRACE_MAX_ATTRS);
    CHECK_INT(trace_span_set_attr_str(s, "s", STR_LIT("again")), 0);
    /* Status: message kept only for ERROR; OK is final. */
    CHECK_INT(trace_span_set_status(s, TRACE_STATUS_ERROR, STR_LIT("upstream timed out")), 0);
    trace_span_set_tracestate(s, STR_LIT(" congo=t61rcWkgMzE "));
    CHECK_STRV(trace_span_tracestate(s), "congo=t61rcWkgMzE");

    json_t *j = span_json(s);
    json_t *attrs = json_object_get(j, "attributes");
    CHECK_INT(json_array_size(attrs), TRACE_MAX_ATTRS);
    CHECK_INT(json_integer_value(json_object_get(j, "droppedAttributesCount")), 9 + 30 - TRACE_MAX_ATTRS);
    CHECK_STR(attr_str(attrs, "s"), "again");
    CHECK_STR(json_string_value(json_object_get(attr_value(attrs, "i"), "intValue")), "-9007199254740993");
    CHECK(json_real_value(json_object_get(attr_value(attrs, "d"), "doubleValue")) == 0.1);
    CHECK_STR(json_string_value(json_object_get(attr_value(attrs, "nan"), "doubleValue")), "NaN");
    CHECK_STR(json_string_value(json_object_get(attr_value(attrs, "b"), "intValue")), "7");
    CHECK_INT(strlen(attr_str(attrs, "long")), TRACE_MAX_VALUE);
    CHECK_INT(strlen(attr_str(attrs, "utf8")), 255);
    CHECK_STR(attr_str(attrs, "bad"), "a\xef\xbf\xbd" "b"); /* U+FFFD */
    CHECK(attr_value(attrs, "n22") != NULL);
    CHECK(attr_value(attrs, "n23") == NULL);
    CHECK_STR(json_string_value(json_object_get(j, "traceState")), "congo=t61rcWkgMzE");
    json_t *st = json_object_get(j, "status");
    CHECK_INT(json_integer_value(json_object_get(st, "code")), 2);
    CHECK_STR(json_string_value(json_object_get(st, "message")), "upstream timed out");
    json_decref(j);

    CHECK_INT(trace_span_set_status(s, TRACE_STATUS_OK, STR_LIT("ignored message")), 0);
    CHECK_INT(trace_span_set_status(s, TRACE_STATUS_ERROR, STR_LIT("too late")), 0);
    j = span_json(s);
    st = json_object_get(j, "status");
    CHECK_INT(json_integer_value(json_object_get(st, "code")), 1);
    CHECK(json_object_get(st, "message") == NULL);
    CHECK_STR(json_string_value(json_object_get(j, "name")), "attrs");
    CHECK_INT(json_integer_value(json_object_get(j, "kind")), 1);
    CHECK(json_object_get(j, "parentSpanId") == NULL);
    json_decref(j);

    /* A long name is cut. */
    memset(v, 'n', sizeof v);
    v[sizeof v - 1] = '\0';
    struct trace_span *n = trace_span_start(t, v, TRACE_SPAN_INTERNAL, NULL);
    j = span_json(n);
    CHECK_INT(strlen(json_string_value(json_object_get(j, "name"))), TRACE_MAX_NAME);
    json_decref(j);
    trace_span_end(n);
    trace_span_end(s);

    /* all or nothing when the buffer is too small */
    s = trace_span_start(t, "small", TRACE_SPAN_INTERNAL, NULL);
    struct buf b;
    buf_init(&b, 64);
    buf_append_cstr(&b, "keep");
    CHECK_INT(trace_span_to_json(s, &b), -ENOBUFS);
    CHECK_STRV(buf_str(&b), "keep");
    buf_free(&b);
    trace_span_end(s);
    trace_tracer_free(t);
    loop_run_once(l, 0);
    loop_free(l);
}

static void test_current_span_logs(void)
{
    int p[2];
    CHECK_INT(pipe2(p, O_NONBLOCK), 0);
    log_set_fd(p[1]);
    struct trace_ctx parent;
    parse("00-" TID "-" SID "-01", &parent);
    struct trace_span *s = trace_span_start(NULL, "x", TRACE_SPAN_SERVER, &parent);
    trace_span_make_current(s);
    CHECK(trace_current_span() == s);
    log_info("inside");
    trace_span_end(s); /* clears the current span */
    CHECK(trace_current_span() == NULL);
    log_info("outside");
    log_set_fd(1);
    char out[4096];
    ssize_t n = read(p[0], out, sizeof out - 1);
    CHECK(n > 0);
    out[n > 0 ? n : 0] = '\0';
    char *second = strchr(out, '\n');
    CHECK(second != NULL);
    if (second) {
        *second++ = '\0';
        CHECK(strstr(out, "\"trace_id\":\"" TID "\"") != NULL);
        CHECK(strstr(out, "\"span_id\":\"") != NULL);
        CHECK(strstr(second, "trace_id") == NULL);
    }
    close(p[0]);
    close(p[1]);
}

static void test_config_env(void)
{
    struct trace_config c;
    const char *bad = NULL;
    trace_config_init(&c);
    CHECK(c.sample_ratio == 1.0);
    CHECK_INT(c.max_queue, 2048);
    CHECK_INT(c.batch_size, 512);
    CHECK_INT(c.flush_interval_ms, 1000);
    CHECK_INT(c.export_timeout_ms, 10000);
    CHECK(c.endpoint == NULL && c.traces_endpoint == NULL);
    setenv("OTEL_SERVICE_NAME", "orders", 1);
    setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318", 1);
    setenv("OTEL_BSP_SCHEDULE_DELAY", "250", 1);
    setenv("OTEL_BSP_MAX_QUEUE_SIZE", "100", 1);
    setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio", 1);
    setenv("OTEL_TRACES_SAMPLER_ARG", "0.25", 1);
    CHECK_INT(trace_config_from_env(&c, &bad), 0);
    CHECK_STR(c.service_name, "orders");
    CHECK_STR(c.endpoint, "http://127.0.0.1:4318");
    CHECK_INT(c.flush_interval_ms, 250);
    CHECK_INT(c.max_queue, 100);
    CHECK(c.sample_ratio == 0.25);
    setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "12x", 1);
    setenv("OTEL_TRACES_SAMPLER_ARG", "1.5", 1);
    CHECK_INT(trace_config_from_env(&c, &bad), -EINVAL);
    CHECK_STR(bad, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE");
    CHECK_INT(c.batch_size, 512);
    CHECK(c.sample_ratio == 1.0); /* the argument was bad: the sampler's default */
    unsetenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE");
    setenv("OTEL_SDK_DISABLED", "true", 1);
    setenv("OTEL_TRACES_SAMPLER", "always_off", 1);
    CHECK_INT(trace_config_from_env(&c, &bad), 0);
    CHECK(c.endpoint == NULL && c.traces_endpoint == NULL);
    CHECK(c.sample_ratio == 0.0);
    const char *vars[] = { "OTEL_SERVICE_NAME", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_BSP_SCHEDULE_DELAY",
                           "OTEL_BSP_MAX_QUEUE_SIZE", "OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG",
                           "OTEL_SDK_DISABLED" };
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
        unsetenv(vars[i]);

    /* Unusable endpoints disable export; a bad ratio is refused. */
    struct loop *l = loop_new();
    const char *unusable[] = { "https://127.0.0.1:4318", "http://collector.example:4318", "not a url" };
    for (size_t i = 0; i < 3; i++) {
        trace_config_init(&c);
        c.endpoint = unusable[i];
        struct trace_tracer *t = trace_tracer_new(l, &c);
        CHECK(t != NULL);
        CHECK(!trace_tracer_is_enabled(t));
        trace_tracer_free(t);
    }
    trace_config_init(&c);
    c.sample_ratio = 2;
    errno = 0;
    CHECK(trace_tracer_new(l, &c) == NULL);
    CHECK_INT(errno, EINVAL);
    loop_run_once(l, 0);
    loop_free(l);
}

/* ---- export to a real receiver --------------------------------------------- */

struct receiver {
    struct loop *loop;
    struct http1_server *server;
    uint16_t port;
    int nrequests;
    int statuses[8];       /* answer for request i; 0 → 200 */
    const char *body_200;  /* answer body for 2xx; NULL → "{}" */
    const char *retry_after; /* Retry-After on errors, if set */
    uint64_t at_ms[16];    /* loop time of each request */
    json_t *bodies[16];    /* what arrived, parsed */
    int answered[16];
    char paths[16][64];
    char content_types[16][64];
};

static void receiver_handler(struct http1_exchange *x, void *arg)
{
    struct receiver *r = arg;
    int i = r->nrequests++;
    int status = i < 8 && r->statuses[i] ? r->statuses[i] : 200;
    if (i < 16) {
        r->bodies[i] = json_loadb(x->body.p, x->body.n, JSON_REJECT_DUPLICATES, NULL);
        r->answered[i] = status;
        r->at_ms[i] = loop_now_ms(r->loop);
        snprintf(r->paths[i], sizeof r->paths[i], "%.*s", STR_FMT(x->req.target));
        const struct http1_header *ct = http1_find_header(x->req.headers, x->req.nheaders, STR_LIT("Content-Type"));
        snprintf(r->content_types[i], sizeof r->content_types[i], "%.*s", ct ? (int)ct->value.n : 0,
                 ct ? ct->value.p : "");
    }
    const char *body = status / 100 == 2 ? (r->body_200 ? r->body_200 : "{}") : "{\"code\":14}";
    struct http1_header h[] = { { STR_LIT("Content-Type"), STR_LIT("application/json") },
                                { STR_LIT("Retry-After"), str_from_cstr(r->retry_after) } };
    http1_respond(x, status, h, status / 100 != 2 && r->retry_after ? 2 : 1, str_from_cstr(body));
}

static void receiver_start(struct receiver *r, struct loop *l)
{
    memset(r, 0, sizeof *r);
    r->loop = l;
    struct http1_server_config cfg = { .handler = receiver_handler, .handler_arg = r };
    r->server = http1_server_new(l, &cfg);
    struct net_addr a, bound;
    int lfd = -1;
    net_addr_parse(STR_LIT("127.0.0.1:0"), true, &a);
    CHECK_INT(net_listen(&a, NULL, &lfd), 0);
    CHECK_INT(net_local_addr(lfd, &bound), 0);
    r->port = net_addr_port(&bound);
    CHECK_INT(http1_server_listen_fd(r->server, lfd), 0);
}

static void receiver_stop(struct receiver *r)
{
    http1_server_close_all(r->server);
    for (int i = 0; i < 5; i++)
        loop_run_once(r->loop, 0);
    http1_server_free(r->server);
    for (int i = 0; i < 16; i++)
        json_decref(r->bodies[i]);
}

/* Runs the loop until *flag or ms pass; a loop timer is the deadline, so the
 * wait cannot hang. Returns whether the flag was set. */
static bool deadline_hit;
static void deadline_cb(struct loop_timer *t) { (void)t; deadline_hit = true; }

static bool run_until(struct loop *l, const bool *flag, uint64_t ms)
{
    struct loop_timer deadline;
    loop_timer_init(l, &deadline, deadline_cb, NULL);
    deadline_hit = false;
    loop_timer_start(&deadline, ms);
    while (!*flag && !deadline_hit)
        loop_run_once(l, -1);
    loop_timer_stop(&deadline);
    return *flag;
}

/* Runs the loop for ms whatever happens. */
static void run_for(struct loop *l, uint64_t ms)
{
    bool never = false;
    run_until(l, &never, ms);
}

struct flush_result {
    bool is_done;
    int err;
};

static void on_flushed(int err, void *arg)
{
    struct flush_result *f = arg;
    f->is_done = true;
    f->err = err;
}

static struct trace_tracer *exporter(struct loop *l, const struct receiver *r, struct trace_config *cfg, char *url,
                                     size_t urlsz)
{
    snprintf(url, urlsz, "http://127.0.0.1:%u", r->port);
    cfg->endpoint = url;
    cfg->service_name = "test-svc";
    return trace_tracer_new(l, cfg);
}

static void test_export_end_to_end(void)
{
    struct loop *l = loop_new();
    struct receiver r;
    receiver_start(&r, l);
    struct trace_config cfg;
    trace_config_init(&cfg);
    cfg.flush_interval_ms = 100;
    char url[64];
    struct trace_tracer *t = exporter(l, &r, &cfg, url, sizeof url);
    CHECK(trace_tracer_is_enabled(t));

    struct trace_ctx remote;
    parse("00-" TID "-" SID "-01", &remote);
    struct trace_span *server = trace_span_start(t, "GET /v1/users/{id}", TRACE_SPAN_SERVER, &remote);
    trace_span_set_attr_str(server, "http.request.method", STR_LIT("GET"));
    trace_span_set_attr_int(server, "http.response.status_code", 503);
    trace_span_set_attr_bool(server, "retried", false);
    trace_span_set_attr_double(server, "ratio", 2.5);
    trace_span_set_status(server, TRACE_STATUS_ERROR, STR_LIT("upstream unavailable"));
    struct trace_span *client = trace_span_start(t, "db query", TRACE_SPAN_CLIENT, trace_span_ctx(server));
    struct trace_span *root = trace_span_start(t, "tick", TRACE_SPAN_INTERNAL, NULL);
    char server_id[17], client_id[17], root_id[17], root_trace[33];
    strcpy(server_id, trace_span_ctx(server)->span_id);
    strcpy(client_id, trace_span_ctx(client)->span_id);
    strcpy(root_id, trace_span_ctx(root)->span_id);
    strcpy(root_trace, trace_span_ctx(root)->trace_id);
    trace_span_end(client);
    trace_span_end(server);
    trace_span_end(root);
    CHECK_INT(trace_tracer_stats(t)->queued, 3);

    /* The interval timer sends the partial batch. */
    bool got = false;
    for (int i = 0; i < 200 && !got; i++) {
        run_for(l, 10);
        got = trace_tracer_stats(t)->exported == 3;
    }
    CHECK(got);
    CHECK_INT(r.nrequests, 1);
    CHECK_STR(r.paths[0], "/v1/traces");
    CHECK_STR(r.content_types[0], "application/json");
    json_t *body = r.bodies[0];
    CHECK(body != NULL);
    json_t *rs = json_array_get(json_object_get(body, "resourceSpans"), 0);
    json_t *rattrs = json_object_get(json_object_get(rs, "resource"), "attributes");
    CHECK_STR(attr_str(rattrs, "service.name"), "test-svc");
    char host[256] = "";
    gethostname(host, sizeof host - 1);
    char instance[300];
    snprintf(instance, sizeof instance, "%s-%ld", host, (long)getpid());
    CHECK_STR(attr_str(rattrs, "service.instance.id"), instance);
    json_t *ss = json_array_get(json_object_get(rs, "scopeSpans"), 0);
    CHECK_STR(json_string_value(json_object_get(json_object_get(ss, "scope"), "name")), "strata");
    json_t *spans = json_object_get(ss, "spans");
    CHECK_INT(json_array_size(spans), 3);
    /* In the order they ended. */
    json_t *c = json_array_get(spans, 0), *s = json_array_get(spans, 1), *o = json_array_get(spans, 2);
    CHECK_STR(json_string_value(json_object_get(s, "traceId")), TID);
    CHECK_STR(json_string_value(json_object_get(s, "spanId")), server_id);
    CHECK_STR(json_string_value(json_object_get(s, "parentSpanId")), SID);
    CHECK_STR(json_string_value(json_object_get(s, "name")), "GET /v1/users/{id}");
    CHECK_INT(json_integer_value(json_object_get(s, "kind")), 2);
    CHECK_INT(json_integer_value(json_object_get(s, "flags")), 1);
    json_t *sattrs = json_object_get(s, "attributes");
    CHECK_INT(json_array_size(sattrs), 4);
    CHECK_STR(attr_str(sattrs, "http.request.method"), "GET");
    CHECK_STR(json_string_value(json_object_get(attr_value(sattrs, "http.response.status_code"), "intValue")),
              "503");
    CHECK(json_is_false(json_object_get(attr_value(sattrs, "retried"), "boolValue")));
    CHECK(json_real_value(json_object_get(attr_value(sattrs, "ratio"), "doubleValue")) == 2.5);
    json_t *st = json_object_get(s, "status");
    CHECK_INT(json_integer_value(json_object_get(st, "code")), 2);
    CHECK_STR(json_string_value(json_object_get(st, "message")), "upstream unavailable");
    const char *start = json_string_value(json_object_get(s, "startTimeUnixNano"));
    const char *end = json_string_value(json_object_get(s, "endTimeUnixNano"));
    CHECK(start && end);
    if (start && end) {
        unsigned long long a = strtoull(start, NULL, 10), b = strtoull(end, NULL, 10);
        CHECK(a > 1600000000ull * 1000000000ull);
        CHECK(b >= a);
        CHECK(strspn(start, "0123456789") == strlen(start));
    }
    CHECK_STR(json_string_value(json_object_get(c, "traceId")), TID);
    CHECK_STR(json_string_value(json_object_get(c, "spanId")), client_id);
    CHECK_STR(json_string_value(json_object_get(c, "parentSpanId")), server_id);
    CHECK_INT(json_integer_value(json_object_get(c, "kind")), 3);
    CHECK_INT(json_integer_value(json_object_get(json_object_get(c, "status"), "code")), 0);
    CHECK_STR(json_string_value(json_object_get(o, "traceId")), root_trace);
    CHECK_STR(json_string_value(json_object_get(o, "spanId")), root_id);
    CHECK(json_object_get(o, "parentSpanId") == NULL);
    CHECK_INT(json_integer_value(json_object_get(o, "kind")), 1);

    CHECK_INT(trace_tracer_stats(t)->queued, 0);
    CHECK_INT(trace_tracer_stats(t)->failed, 0);
    CHECK_INT(trace_tracer_stats(t)->requests, 1);

    /* A full batch goes at once, without waiting for the interval. */
    trace_tracer_free(t);
    cfg.batch_size = 4;
    cfg.flush_interval_ms = 60000;
    t = exporter(l, &r, &cfg, url, sizeof url);
    for (int i = 0; i < 9; i++)
        trace_span_end(trace_span_start(t, "s", TRACE_SPAN_INTERNAL, NULL));
    for (int i = 0; i < 100 && trace_tracer_stats(t)->exported < 8; i++)
        run_for(l, 10);
    CHECK_INT(trace_tracer_stats(t)->exported, 8);
    CHECK_INT(trace_tracer_stats(t)->queued, 1); /* the ninth waits for the interval, or a flush */
    CHECK_INT(r.nrequests, 3);
    CHECK_INT(json_array_size(json_object_get(json_array_get(json_object_get(json_array_get(json_object_get(
                  r.bodies[1], "resourceSpans"), 0), "scopeSpans"), 0), "spans")), 4);
    struct flush_result f = { 0 };
    CHECK_INT(trace_tracer_flush(t, 2000, on_flushed, &f), 0);
    CHECK_INT(trace_tracer_flush(t, 2000, on_flushed, &f), -EBUSY);
    CHECK(!f.is_done); /* never inside the call */
    CHECK(run_until(l, &f.is_done, 3000));
    CHECK_INT(f.err, 0);
    CHECK_INT(trace_tracer_stats(t)->exported, 9);
    CHECK_INT(r.nrequests, 4);
    trace_tracer_free(t);
    receiver_stop(&r);
    loop_free(l);
}

/* span ids in an export body */
static int body_span_ids(json_t *body, char ids[][17], int max)
{
    json_t *spans = json_object_get(json_array_get(json_object_get(json_array_get(json_object_get(body,
                                    "resourceSpans"), 0), "scopeSpans"), 0), "spans");
    int n = 0;
    size_t i;
    json_t *sp;
    json_array_foreach(spans, i, sp) {
        if (n < max)
            snprintf(ids[n++], 17, "%s", json_string_value(json_object_get(sp, "spanId")));
    }
    return n;
}

static void test_export_retries_exactly_once(void)
{
    struct loop *l = loop_new();
    struct receiver r;
    receiver_start(&r, l);
    r.statuses[0] = 503;
    r.statuses[1] = 503;
    struct trace_config cfg;
    trace_config_init(&cfg);
    cfg.retry_initial_ms = 50;
    cfg.retry_max_ms = 200;
    char url[64];
    struct trace_tracer *t = exporter(l, &r, &cfg, url, sizeof url);
    enum { N = 5 };
    char ended[N][17];
    for (int i = 0; i < N; i++) {
        struct trace_span *s = trace_span_start(t, "work", TRACE_SPAN_INTERNAL, NULL);
        strcpy(ended[i], trace_span_ctx(s)->span_id);
        trace_span_end(s);
    }
    struct flush_result f = { 0 };
    CHECK_INT(trace_tracer_flush(t, 5000, on_flushed, &f), 0);
    /* While the batch is in backoff, new spans keep queueing. */
    bool has_retried = false;
    for (int i = 0; i < 200 && !has_retried; i++) {
        run_for(l, 5);
        has_retried = trace_tracer_stats(t)->retries >= 1;
    }
    CHECK(has_retried);
    struct trace_span *late = trace_span_start(t, "late", TRACE_SPAN_INTERNAL, NULL);
    char late_id[17];
    strcpy(late_id, trace_span_ctx(late)->span_id);
    trace_span_end(late);
    CHECK(run_until(l, &f.is_done, 5000));
    CHECK_INT(f.err, 0);
    const struct trace_tracer_stats *st = trace_tracer_stats(t);
    CHECK_INT(st->retries, 2);
    CHECK_INT(st->exported, N + 1);
    CHECK_INT(st->failed, 0);
    CHECK_INT(st->queued, 0);
    CHECK_INT(st->requests, 4);
    CHECK_INT(r.nrequests, 4);
    /* The same batch three times (two 503s, one 200), then the late span. */
    int delivered = 0, seen[N + 1] = { 0 };
    for (int i = 0; i < r.nrequests && i < 16; i++) {
        char ids[16][17];
        int n = body_span_ids(r.bodies[i], ids, 16);
        CHECK_INT(n, i < 3 ? N : 1);
        if (r.answered[i] != 200)
            continue;
        for (int k = 0; k < n; k++) {
            delivered++;
            for (int e = 0; e < N; e++)
                if (!strcmp(ids[k], ended[e]))
                    seen[e]++;
            if (!strcmp(ids[k], late_id))
                seen[N]++;
        }
    }
    CHECK_INT(delivered, N + 1);
    for (int e = 0; e <= N; e++)
        CHECK_INT(seen[e], 1);
    CHECK_INT(r.answered[0], 503);
    CHECK_INT(r.answered[1], 503);
    CHECK_INT(r.answered[2], 200);
    trace_tracer_free(t);
    receiver_stop(&r);
    loop_free(l);
}

static void test_retry_after(void)
{
    /* 429 with Retry-After: 1 s is honoured, up to retry_max_ms (300 ms)
     * rather than the 10 ms backoff. */
    struct loop *l = loop_new();
    struct receiver r;
    receiver_start(&r, l);
    r.statuses[0] = 429;
    r.statuses[1] = 504;
    r.retry_after = "1";
    struct trace_config cfg;
    trace_config_init(&cfg);
    cfg.retry_initial_ms = 10;
    cfg.retry_max_ms = 300;
    char url[64];
    struct trace_tracer *t = exporter(l, &r, &cfg, url, sizeof url);
    trace_span_end(trace_span_start(t, "a", TRACE_SPAN_INTERNAL, NULL));
    struct flush_result f = { 0 };
    trace_tracer_flush(t, 3000, on_flushed, &f);
    CHECK(run_until(l, &f.is_done, 3000));
    CHECK_INT(f.err, 0);
    CHECK_INT(r.nrequests, 3);
    CHECK(r.at_ms[1] - r.at_ms[0] >= 290);
    CHECK(r.at_ms[2] - r.at_ms[1] >= 290);
    CHECK_INT(trace_tracer_stats(t)->retries, 2);
    CHECK_INT(trace_tracer_stats(t)->exported, 1);
    trace_tracer_free(t);
    receiver_stop(&r);
    loop_free(l);
}

static void test_export_permanent_error_and_partial(void)
{
    struct loop *l = loop_new();
    struct receiver r;
    receiver_start(&r, l);
    r.statuses[0] = 400; /* retrying cannot help */
    r.body_200 = "{\"partialSuccess\":{\"rejectedSpans\":\"2\",\"errorMessage\":\"bad\"}}";
    struct trace_config cfg;
    trace_config_init(&cfg);
    cfg.retry_initial_ms = 20;
    char url[64];
    struct trace_tracer *t = exporter(l, &r, &cfg, url, sizeof url);
    for (int i = 0; i < 3; i++)
        trace_span_end(trace_span_start(t, "a", TRACE_SPAN_INTERNAL, NULL));
    struct flush_result f = { 0 };
    trace_tracer_flush(t, 3000, on_flushed, &f);
    CHECK(run_until(l, &f.is_done, 3000));
    CHECK_INT(f.err, 0);
    CHECK_INT(trace_tracer_stats(t)->failed, 3);
    CHECK_INT(trace_tracer_stats(t)->retries, 0);
    CHECK_INT(trace_tracer_stats(t)->exported, 0);
    for (int i = 0; i < 5; i++)
        trace_span_end(trace_span_start(t, "b", TRACE_SPAN_INTERNAL, NULL));
    f.is_done = false;
    trace_tracer_flush(t, 3000, on_flushed, &f);
    CHECK(run_until(l, &f.is_done, 3000));
    CHECK_INT(trace_tracer_stats(t)->exported, 3);
    CHECK_INT(trace_tracer_stats(t)->failed, 5);
    CHECK_INT(r.nrequests, 2);
    trace_tracer_free(t);
    receiver_stop(&r);
    loop_free(l);
}

static void test_queue_overflow(void)
{
    struct loop *l = loop_new();
    struct receiver r;
    receiver_start(&r, l);
    struct trace_config cfg;
    trace_config_init(&cfg);
    cfg.max_queue = 10;
    cfg.batch_size = 4;
    char url[64];
    struct trace_tracer *t = exporter(l, &r, &cfg, url, sizeof url);
    /* The loop does not run: nothing leaves the queue. */
    for (int i = 0; i < 25; i++)
        trace_span_end(trace_span_start(t, "x", TRACE_SPAN_INTERNAL, NULL));
    CHECK_INT(trace_tracer_dropped(t), 15);
    CHECK_INT(trace_tracer_stats(t)->queued, 10);
    struct flush_result f = { 0 };
    trace_tracer_flush(t, 3000, on_flushed, &f);
    CHECK(run_until(l, &f.is_done, 3000));
    CHECK_INT(f.err, 0);
    CHECK_INT(trace_tracer_stats(t)->exported, 10);
    CHECK_INT(r.nrequests, 3); /* 4 + 4 + 2 */
    CHECK_INT(trace_tracer_dropped(t), 15);
    trace_tracer_free(t);

    /* The byte bound: spans of ~900 bytes against 4 KiB. */
    cfg.max_queue = 100;
    cfg.max_queue_bytes = 4096;
    t = exporter(l, &r, &cfg, url, sizeof url);
    char v[TRACE_MAX_VALUE];
    memset(v, 'v', sizeof v);
    int kept = 0;
    for (int i = 0; i < 10; i++) {
        struct trace_span *s = trace_span_start(t, "big", TRACE_SPAN_INTERNAL, NULL);
        for (int k = 0; k < 3; k++) {
            char key[8];
            snprintf(key, sizeof key, "k%d", k);
            trace_span_set_attr_str(s, key, str_make(v, sizeof v));
        }
        uint64_t before = trace_tracer_stats(t)->queued;
        trace_span_end(s);
        kept += trace_tracer_stats(t)->queued > before;
    }
    CHECK(kept >= 3 && kept <= 5);
    CHECK_INT(trace_tracer_dropped(t), 10 - kept);
    trace_tracer_free(t); /* frees what is queued */
    receiver_stop(&r);
    loop_free(l);
}

struct shutdown {
    struct trace_tracer *t;
    struct flush_result f;
};

static void free_on_flushed(int err, void *arg)
{
    struct shutdown *sd = arg;
    sd->f.err = err;
    sd->f.is_done = true;
    CHECK_INT(trace_tracer_stats(sd->t)->exported, 2);
    trace_tracer_free(sd->t); /* the shutdown pattern: flush, then free in the callback */
    sd->t = NULL;
}

static void test_flush_then_free(void)
{
    struct loop *l = loop_new();
    struct receiver r;
    receiver_start(&r, l);
    struct trace_config cfg;
    trace_config_init(&cfg);
    char url[64];
    struct shutdown sd = { 0 };
    sd.t = exporter(l, &r, &cfg, url, sizeof url);
    trace_span_end(trace_span_start(sd.t, "a", TRACE_SPAN_SERVER, NULL));
    trace_span_end(trace_span_start(sd.t, "b", TRACE_SPAN_SERVER, NULL));
    CHECK_INT(trace_tracer_flush(sd.t, 2000, free_on_flushed, &sd), 0);
    CHECK(run_until(l, &sd.f.is_done, 3000));
    CHECK_INT(sd.f.err, 0);
    CHECK(sd.t == NULL);
    CHECK_INT(r.nrequests, 1);
    receiver_stop(&r);
    loop_free(l);
}

static void test_no_endpoint_sends_nothing(void)
{
    struct loop *l = loop_new();
    struct receiver r;
    receiver_start(&r, l);
    struct trace_config cfg;
    trace_config_init(&cfg);
    cfg.flush_interval_ms = 20;
    struct trace_tracer *t = trace_tracer_new(l, &cfg);
    CHECK(!trace_tracer_is_enabled(t));
    struct trace_ctx parent;
    parse("00-" TID "-" SID "-01", &parent);
    for (int i = 0; i < 10; i++) {
        struct trace_span *s = trace_span_start(t, "x", TRACE_SPAN_SERVER, i % 2 ? &parent : NULL);
        CHECK(!trace_span_is_recording(s));
        CHECK(trace_ctx_is_valid(trace_span_ctx(s))); /* still propagates */
        trace_span_end(s);
    }
    struct flush_result f = { 0 };
    CHECK_INT(trace_tracer_flush(t, 1000, on_flushed, &f), 0);
    CHECK(run_until(l, &f.is_done, 1000));
    CHECK_INT(f.err, 0);
    run_for(l, 100);
    CHECK_INT(r.nrequests, 0);
    const struct trace_tracer_stats *st = trace_tracer_stats(t);
    CHECK_INT(st->queued + st->exported + st->dropped + st->requests, 0);
    trace_tracer_free(t);
    receiver_stop(&r);
    loop_free(l);
}

static void test_export_paths_and_flush_timeout(void)
{
    struct loop *l = loop_new();
    struct receiver r;
    receiver_start(&r, l);
    struct trace_config cfg;
    trace_config_init(&cfg);
    char url[64], turl[64];
    /* A base with a trailing slash; then a traces endpoint used as is. */
    snprintf(url, sizeof url, "http://localhost:%u/", r.port);
    cfg.endpoint = url;
    struct trace_tracer *t = trace_tracer_new(l, &cfg);
    trace_span_end(trace_span_start(t, "x", TRACE_SPAN_INTERNAL, NULL));
    struct flush_result f = { 0 };
    trace_tracer_flush(t, 2000, on_flushed, &f);
    CHECK(run_until(l, &f.is_done, 2000));
    trace_tracer_free(t);
    snprintf(turl, sizeof turl, "http://127.0.0.1:%u/otlp/traces?x=1", r.port);
    cfg.traces_endpoint = turl;
    t = trace_tracer_new(l, &cfg);
    trace_span_end(trace_span_start(t, "x", TRACE_SPAN_INTERNAL, NULL));
    f.is_done = false;
    trace_tracer_flush(t, 2000, on_flushed, &f);
    CHECK(run_until(l, &f.is_done, 2000));
    trace_tracer_free(t);
    CHECK_INT(r.nrequests, 2);
    CHECK_STR(r.paths[0], "/v1/traces");
    CHECK_STR(r.paths[1], "/otlp/traces?x=1");
    receiver_stop(&r);

    /* Nobody listens: the flush gives up at its deadline, spans stay queued. */
    struct net_addr a, bound;
    int lfd;
    net_addr_parse(STR_LIT("127.0.0.1:0"), true, &a);
    net_listen(&a, NULL, &lfd);
    net_local_addr(lfd, &bound);
    close(lfd); /* a port that refuses connections */
    snprintf(turl, sizeof turl, "http://127.0.0.1:%u/v1/traces", net_addr_port(&bound));
    cfg.traces_endpoint = turl;
    cfg.retry_initial_ms = 30;
    t = trace_tracer_new(l, &cfg);
    trace_span_end(trace_span_start(t, "x", TRACE_SPAN_INTERNAL, NULL));
    f.is_done = false;
    uint64_t t0 = loop_now_ms(l);
    trace_tracer_flush(t, 300, on_flushed, &f);
    CHECK(run_until(l, &f.is_done, 3000));
    CHECK_INT(f.err, -ETIMEDOUT);
    CHECK(loop_now_ms(l) - t0 >= 290);
    CHECK(trace_tracer_stats(t)->retries >= 2);
    CHECK_INT(trace_tracer_stats(t)->queued, 1);
    CHECK_INT(trace_tracer_stats(t)->exported, 0);
    trace_tracer_free(t);
    for (int i = 0; i < 3; i++)
        loop_run_once(l, 0);
    loop_free(l);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    log_set_level(LOG_LEVEL_ERROR); /* the tracer's warnings are expected here */
    RUN(test_traceparent_valid);
    RUN(test_traceparent_invalid);
    RUN(test_traceparent_round_trip);
    RUN(test_tracestate_bound);
    RUN(test_sample_ratio);
    RUN(test_span_without_tracer);
    RUN(test_sampling_inheritance);
    RUN(test_attributes);
    log_set_level(LOG_LEVEL_INFO);
    RUN(test_current_span_logs);
    log_set_level(LOG_LEVEL_ERROR);
    RUN(test_config_env);
    RUN(test_export_end_to_end);
    RUN(test_export_retries_exactly_once);
    RUN(test_retry_after);
    RUN(test_export_permanent_error_and_partial);
    RUN(test_queue_overflow);
    RUN(test_flush_then_free);
    RUN(test_no_endpoint_sends_nothing);
    RUN(test_export_paths_and_flush_timeout);
    return check_done();
}
