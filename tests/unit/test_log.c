/* JSON log lines: keys and their order, escaping, levels, trace context,
 * truncation, threads. Every line is captured through a pipe (or a file) and
 * parsed back with jansson. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "core/log.h"

static int cap_r = -1, cap_w = -1;

static void capture_begin(void)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0) {
        perror("pipe2");
        exit(1);
    }
    fcntl(p[0], F_SETPIPE_SZ, 1 << 20);
    fcntl(p[0], F_SETFL, O_NONBLOCK);
    cap_r = p[0];
    cap_w = p[1];
    log_set_fd(cap_w);
}

/* Everything written since capture_begin, NUL-terminated; free() it. */
static char *capture_end(size_t *len)
{
    size_t cap = 1 << 16, n = 0;
    char *out = malloc(cap);
    for (;;) {
        if (cap - n < 4096) {
            cap *= 2;
            out = realloc(out, cap);
        }
        ssize_t r = read(cap_r, out + n, cap - n - 1);
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    out[n] = '\0';
    close(cap_r);
    close(cap_w);
    log_set_fd(1);
    if (len)
        *len = n;
    return out;
}

/* Parses exactly one line (with its '\n') and returns it, or NULL. */
static json_t *one_line(const char *text, size_t n)
{
    CHECK(n > 0 && text[n - 1] == '\n');
    CHECK(memchr(text, '\n', n) == text + n - 1);
    json_error_t je;
    json_t *v = json_loadb(text, n ? n - 1 : 0, JSON_REJECT_DUPLICATES, &je);
    if (!v)
        fprintf(stderr, "unparsable line (%s): %.*s\n", je.text, (int)n, text);
    CHECK(v != NULL);
    return v;
}

/* The raw text of the last CAPTURE_ONE, freed by the next one. */
static char *last_raw;

/* Runs stmt with logging captured; returns its single line parsed. */
#define CAPTURE_ONE(stmt)                          \
    ({                                             \
        capture_begin();                           \
        stmt;                                      \
        size_t cap_n_;                             \
        free(last_raw);                            \
        last_raw = capture_end(&cap_n_);           \
        one_line(last_raw, cap_n_);                \
    })

static const char *sget(json_t *o, const char *k) { return json_string_value(json_object_get(o, k)); }

static void check_key_order(json_t *o, const char *const *keys)
{
    size_t i = 0;
    const char *k;
    json_t *v;
    json_object_foreach(o, k, v) {
        (void)v;
        if (!keys[i]) {
            fprintf(stderr, "extra key %s\n", k);
            CHECK(0);
            return;
        }
        CHECK_STR(k, keys[i]);
        i++;
    }
    CHECK(keys[i] == NULL);
}

static void test_keys_values_and_order(void)
{
    unsetenv("OTEL_SERVICE_NAME");
    unsetenv("LOG_LEVEL");
    log_init("test-svc");
    time_t before = time(NULL);
    json_t *o = CAPTURE_ONE(log_info("order created", LOG_STR("user", "bob"), LOG_INT("n", -5),
                                     LOG_UINT("big", 42), LOG_BOOL("ok", true),
                                     LOG_DOUBLE("ratio", 0.1), LOG_JSON("obj", "{\"a\":[1,2]}"),
                                     LOG_STRV("view", STR_LIT("abc")), LOG_STR("none", NULL),
                                     LOG_ERRNO("error", -ECONNREFUSED)));
    if (!o)
        return;
    check_key_order(o, (const char *const[]){ "ts", "level", "msg", "service", "user", "n", "big",
                                              "ok", "ratio", "obj", "view", "none", "error",
                                              NULL });
    CHECK_STR(sget(o, "level"), "info");
    CHECK_STR(sget(o, "msg"), "order created");
    CHECK_STR(sget(o, "service"), "test-svc");
    CHECK_STR(sget(o, "user"), "bob");
    CHECK_INT(json_integer_value(json_object_get(o, "n")), -5);
    CHECK(json_is_true(json_object_get(o, "ok")));
    CHECK(json_is_null(json_object_get(o, "none")));
    CHECK_STR(sget(o, "view"), "abc");
    CHECK_STR(sget(o, "error"), "Connection refused");
    CHECK_INT(json_array_size(json_object_get(json_object_get(o, "obj"), "a")), 2);
    /* Exact text for the numbers: no float noise, no int64 overflow. */
    CHECK(strstr(last_raw, "\"ratio\":0.1,") != NULL);
    CHECK(strstr(last_raw, "\"big\":42,") != NULL);
    /* ts: 2024-05-01T12:00:00.123Z, and now. */
    const char *ts = sget(o, "ts");
    CHECK(ts && strlen(ts) == 24 && ts[10] == 'T' && ts[19] == '.' && ts[23] == 'Z');
    if (ts) {
        struct tm tm = { 0 };
        CHECK(strptime(ts, "%Y-%m-%dT%H:%M:%S", &tm) == ts + 19);
        time_t t = timegm(&tm);
        CHECK(t >= before && t <= time(NULL));
    }
    json_decref(o);

    /* All of uint64 (jansson itself cannot read this back, hence raw text). */
    capture_begin();
    log_info("u", LOG_UINT("max", UINT64_MAX));
    char *raw = capture_end(NULL);
    CHECK(strstr(raw, ",\"max\":18446744073709551615}\n") != NULL);
    free(raw);
}

static void test_escaping(void)
{
    /* quotes, backslash, control chars, DEL, valid multi-byte, and invalid
     * bytes: a lone 0xff, a cut 2-byte sequence, an overlong '/', a UTF-16
     * surrogate, a code point past U+10FFFF. */
    const char *msg = "q\"b\\n\nt\tc\x01\x1f d\x7f é 😀 ff\xff cut\xc3 ov\xc0\xaf sur\xed\xa0\x80 big\xf4\x90\x80\x80.";
    json_t *o = CAPTURE_ONE(log_info(msg, LOG_STR("k\"ey\n", "v")));
    if (!o)
        return;
    CHECK(strstr(last_raw, "q\\\"b\\\\n\\nt\\tc\\u0001\\u001f d\x7f é 😀 ff\\ufffd cut\\ufffd ov\\ufffd\\ufffd "
                      "sur\\ufffd\\ufffd\\ufffd big\\ufffd\\ufffd\\ufffd\\ufffd.") != NULL);
    CHECK_STR(sget(o, "msg"), "q\"b\\n\nt\tc\x01\x1f d\x7f é 😀 ff\xef\xbf\xbd cut\xef\xbf\xbd "
                              "ov\xef\xbf\xbd\xef\xbf\xbd sur\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd "
                              "big\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd.");
    CHECK_STR(sget(o, "k\"ey\n"), "v");
    json_decref(o);

    /* A raw-JSON value keeps its meaning but loses its newlines. */
    o = CAPTURE_ONE(log_info("raw", LOG_JSON("doc", "{\n  \"a\": \"x\"\n}\r\n"), LOG_JSON("empty", "")));
    if (o) {
        CHECK_STR(json_string_value(json_object_get(json_object_get(o, "doc"), "a")), "x");
        CHECK(json_is_null(json_object_get(o, "empty")));
        json_decref(o);
    }
}

static void test_reserved_keys_renamed(void)
{
    json_t *o = CAPTURE_ONE(log_info("real", LOG_STR("msg", "fake"), LOG_INT("level", 9),
                                     LOG_STR("trace_id", "t")));
    if (!o)
        return;
    CHECK_STR(sget(o, "msg"), "real");
    CHECK_STR(sget(o, "_msg"), "fake");
    CHECK_INT(json_integer_value(json_object_get(o, "_level")), 9);
    CHECK_STR(sget(o, "_trace_id"), "t");
    CHECK(json_object_get(o, "trace_id") == NULL);
    json_decref(o);
}

static void test_doubles(void)
{
    json_t *o = CAPTURE_ONE(log_info("d", LOG_DOUBLE("a", 1.0 / 3), LOG_DOUBLE("b", 1e300),
                                     LOG_DOUBLE("c", -0.0), LOG_DOUBLE("nan", NAN),
                                     LOG_DOUBLE("inf", -INFINITY), LOG_DOUBLE("int", 42.0)));
    if (!o)
        return;
    CHECK(json_real_value(json_object_get(o, "a")) == 1.0 / 3); /* round-trips */
    CHECK(json_real_value(json_object_get(o, "b")) == 1e300);
    CHECK(json_is_null(json_object_get(o, "nan")));
    CHECK(json_is_null(json_object_get(o, "inf")));
    CHECK(strstr(last_raw, "\"int\":42}") != NULL);
    json_decref(o);
}

static int evaluated;
static const char *side_effect(void)
{
    evaluated++;
    return "x";
}

static void test_levels(void)
{
    log_set_level(LOG_LEVEL_WARN);
    CHECK(!log_enabled(LOG_LEVEL_DEBUG));
    CHECK(!log_enabled(LOG_LEVEL_INFO));
    CHECK(log_enabled(LOG_LEVEL_WARN));
    CHECK(log_enabled(LOG_LEVEL_ERROR));
    CHECK_INT(log_get_level(), LOG_LEVEL_WARN);
    evaluated = 0;
    capture_begin();
    log_debug("no", LOG_STR("k", side_effect()));
    log_info("no", LOG_STR("k", side_effect()));
    log_warn("yes-warn", LOG_STR("k", side_effect()));
    log_error("yes-error");
    size_t n;
    char *out = capture_end(&n);
    CHECK_INT(evaluated, 1); /* disabled lines do not even evaluate their values */
    char *nl = strchr(out, '\n');
    CHECK(nl != NULL);
    if (nl) {
        json_t *a = one_line(out, (size_t)(nl - out) + 1);
        json_t *b = one_line(nl + 1, n - (size_t)(nl + 1 - out));
        CHECK_STR(a ? sget(a, "level") : NULL, "warn");
        CHECK_STR(a ? sget(a, "msg") : NULL, "yes-warn");
        CHECK_STR(b ? sget(b, "level") : NULL, "error");
        json_decref(a);
        json_decref(b);
    }
    free(out);
    log_set_level(LOG_LEVEL_INFO);

    enum log_level l;
    CHECK_INT(log_level_parse("DeBuG", &l), 0);
    CHECK_INT(l, LOG_LEVEL_DEBUG);
    CHECK_INT(log_level_parse("warning", &l), -EINVAL);
    CHECK_INT(log_level_parse("", &l), -EINVAL);
    CHECK_STR(log_level_name(LOG_LEVEL_ERROR), "error");
}

static void test_env(void)
{
    setenv("LOG_LEVEL", "ERROR", 1);
    setenv("OTEL_SERVICE_NAME", "order\"svc", 1);
    capture_begin();
    log_init("ignored-default");
    log_warn("hidden");
    log_error("shown");
    size_t n;
    char *out = capture_end(&n);
    json_t *o = one_line(out, n);
    CHECK_STR(o ? sget(o, "msg") : NULL, "shown");
    CHECK_STR(o ? sget(o, "service") : NULL, "order\"svc");
    CHECK_INT(log_get_level(), LOG_LEVEL_ERROR);
    json_decref(o);
    free(out);

    /* Unknown level: info, and exactly one warning that names the value. */
    setenv("LOG_LEVEL", "verbose", 1);
    unsetenv("OTEL_SERVICE_NAME");
    capture_begin();
    log_init("svc");
    log_debug("hidden");
    out = capture_end(&n);
    o = one_line(out, n);
    CHECK_STR(o ? sget(o, "level") : NULL, "warn");
    CHECK_STR(o ? sget(o, "log_level") : NULL, "verbose");
    CHECK_STR(o ? sget(o, "service") : NULL, "svc");
    CHECK_INT(log_get_level(), LOG_LEVEL_INFO);
    json_decref(o);
    free(out);

    /* No argument, no env: the OTel default. */
    unsetenv("LOG_LEVEL");
    log_init(NULL);
    o = CAPTURE_ONE(log_info("x"));
    CHECK_STR(o ? sget(o, "service") : NULL, "unknown_service");
    json_decref(o);
    log_init("test-svc");
}

static const char *T1 = "4bf92f3577b34da6a3ce929d0e0e4736";
static const char *S1 = "00f067aa0ba902b7";

static void *other_thread(void *arg)
{
    (void)arg;
    log_info("from another thread");
    return NULL;
}

static void test_trace_context(void)
{
    CHECK_INT(log_set_trace(T1, S1), 0);
    json_t *o = CAPTURE_ONE(log_info("traced", LOG_INT("k", 1)));
    if (o) {
        check_key_order(o, (const char *const[]){ "ts", "level", "msg", "service", "trace_id",
                                                  "span_id", "k", NULL });
        CHECK_STR(sget(o, "trace_id"), T1);
        CHECK_STR(sget(o, "span_id"), S1);
        json_decref(o);
    }
    /* The context is per thread. */
    pthread_t th;
    o = CAPTURE_ONE((pthread_create(&th, NULL, other_thread, NULL), pthread_join(th, NULL)));
    CHECK(o && json_object_get(o, "trace_id") == NULL);
    json_decref(o);

    /* Bad ids are refused and leave the context alone. */
    CHECK_INT(log_set_trace("4BF92F3577B34DA6A3CE929D0E0E4736", S1), -EINVAL);
    CHECK_INT(log_set_trace("00000000000000000000000000000000", S1), -EINVAL);
    CHECK_INT(log_set_trace(T1, "0000000000000000"), -EINVAL);
    CHECK_INT(log_set_trace(T1, "00f067aa0ba902b"), -EINVAL);
    CHECK_INT(log_set_trace("4bf92f3577b34da6a3ce929d0e0e47361", S1), -EINVAL);
    CHECK_INT(log_set_trace(NULL, S1), -EINVAL);
    o = CAPTURE_ONE(log_info("still"));
    CHECK_STR(o ? sget(o, "trace_id") : NULL, T1);
    json_decref(o);

    log_clear_trace();
    o = CAPTURE_ONE(log_info("cleared"));
    CHECK(o && json_object_get(o, "trace_id") == NULL && json_object_get(o, "span_id") == NULL);
    json_decref(o);
}

static void test_truncation(void)
{
    size_t big = 3 * LOG_LINE_MAX;
    char *s = malloc(big + 1);
    char *raw;
    size_t n;

    CHECK_INT(log_set_trace(T1, S1), 0);
    /* A huge msg: cut, but service and trace ids survive. */
    memset(s, 'x', big);
    s[big] = '\0';
    capture_begin();
    log_info(s, LOG_INT("after", 1));
    raw = capture_end(&n);
    CHECK(n <= LOG_LINE_MAX);
    json_t *o = one_line(raw, n);
    if (o) {
        CHECK(json_is_true(json_object_get(o, "truncated")));
        CHECK_STR(sget(o, "service"), "test-svc");
        CHECK_STR(sget(o, "trace_id"), T1);
        CHECK(json_string_length(json_object_get(o, "msg")) > LOG_LINE_MAX - 1000);
        CHECK(json_object_get(o, "after") == NULL);
        json_decref(o);
    }
    free(raw);

    /* Multi-byte characters and 6-byte escapes at every possible cut point:
     * the line stays valid JSON (jansson rejects broken UTF-8 and escapes). */
    for (int shift = 0; shift < 8; shift++) {
        for (size_t i = 0; i < big; i++)
            s[i] = "\x01\xc3\xa9\xf0\x9f\x98\x80\"a"[(i + (size_t)shift) % 9];
        s[big] = '\0';
        capture_begin();
        log_info("m", LOG_STR("pad", s + (big - 40 - (size_t)shift)), LOG_STR("v", s));
        raw = capture_end(&n);
        CHECK(n <= LOG_LINE_MAX);
        o = one_line(raw, n);
        CHECK(o && json_is_true(json_object_get(o, "truncated")));
        CHECK(o && json_string_length(json_object_get(o, "v")) > 0);
        json_decref(o);
        free(raw);
    }

    /* Values that cannot be cut are left out whole. */
    memset(s, ' ', LOG_LINE_MAX);
    s[0] = '[';
    s[LOG_LINE_MAX - 1] = ']';
    s[LOG_LINE_MAX] = '\0';
    o = CAPTURE_ONE(log_info("m", LOG_INT("a", 1), LOG_JSON("raw", s), LOG_INT("b", 2)));
    CHECK(o && json_is_true(json_object_get(o, "truncated")));
    CHECK(o && json_integer_value(json_object_get(o, "a")) == 1);
    CHECK(o && json_object_get(o, "raw") == NULL && json_object_get(o, "b") == NULL);
    json_decref(o);

    /* Many small values: as many as fit, then the marker. */
    struct log_kv kv[2000];
    for (int i = 0; i < 2000; i++)
        kv[i] = (struct log_kv)LOG_INT("counter", 1234567890123LL + i);
    capture_begin();
    log_write(LOG_LEVEL_INFO, "many", kv, 2000);
    raw = capture_end(&n);
    CHECK(n <= LOG_LINE_MAX && n > LOG_LINE_MAX - 64);
    CHECK(strstr(raw, ",\"truncated\":true}\n") != NULL);
    free(raw);

    /* Just under the bound: not truncated. */
    capture_begin();
    log_write(LOG_LEVEL_INFO, "few", kv, 10);
    raw = capture_end(&n);
    CHECK(strstr(raw, "truncated") == NULL);
    free(raw);

    log_clear_trace();
    free(s);
}

struct writer_arg {
    int id;
    int lines;
};

static void *writer(void *p)
{
    struct writer_arg *a = p;
    /* 6000 bytes: more than PIPE_BUF, so only our lock keeps lines whole. */
    static _Thread_local char val[6001];
    memset(val, 'a' + a->id, 6000);
    val[6000] = '\0';
    for (int i = 0; i < a->lines; i++)
        log_info("line", LOG_INT("thread", a->id), LOG_INT("i", i), LOG_STR("pad", val));
    return NULL;
}

static void test_threads_do_not_interleave(void)
{
    enum { THREADS = 4, LINES = 300 };
    char path[] = "/tmp/strata-test-log-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    if (fd < 0)
        return;
    unlink(path);
    fcntl(fd, F_SETFL, O_APPEND);
    log_set_fd(fd);
    pthread_t th[THREADS];
    struct writer_arg args[THREADS];
    for (int i = 0; i < THREADS; i++) {
        args[i] = (struct writer_arg){ i, LINES };
        pthread_create(&th[i], NULL, writer, &args[i]);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    log_set_fd(1);

    struct stat st;
    fstat(fd, &st);
    char *all = malloc((size_t)st.st_size + 1);
    CHECK(pread(fd, all, (size_t)st.st_size, 0) == st.st_size);
    all[st.st_size] = '\0';
    close(fd);
    int next[THREADS] = { 0 }, bad = 0, total = 0;
    for (char *p = all; *p;) {
        char *nl = strchr(p, '\n');
        if (!nl) {
            bad++;
            break;
        }
        json_t *o = json_loadb(p, (size_t)(nl - p), JSON_REJECT_DUPLICATES, NULL);
        if (!o) {
            bad++;
        } else {
            int t = (int)json_integer_value(json_object_get(o, "thread"));
            int i = (int)json_integer_value(json_object_get(o, "i"));
            const char *pad = sget(o, "pad");
            if (t < 0 || t >= THREADS || i != next[t] || !pad || strlen(pad) != 6000 ||
                pad[0] != 'a' + t || pad[5999] != 'a' + t)
                bad++;
            else
                next[t]++;
            json_decref(o);
        }
        total++;
        p = nl + 1;
    }
    CHECK_INT(bad, 0);
    CHECK_INT(total, THREADS * LINES);
    for (int i = 0; i < THREADS; i++)
        CHECK_INT(next[i], LINES);
    free(all);
}

static void test_write_failure_counts_drop(void)
{
    uint64_t before = log_dropped();
    int saved = errno = 1234;
    log_set_fd(-1);
    log_info("nowhere");
    log_set_fd(1);
    CHECK(log_dropped() == before + 1);
    CHECK_INT(errno, saved); /* logging never clobbers the caller's errno */
}

int main(void)
{
    RUN(test_keys_values_and_order);
    RUN(test_escaping);
    RUN(test_reserved_keys_renamed);
    RUN(test_doubles);
    RUN(test_levels);
    RUN(test_env);
    RUN(test_trace_context);
    RUN(test_truncation);
    RUN(test_threads_do_not_interleave);
    RUN(test_write_failure_counts_drop);
    free(last_raw);
    return check_done();
}
