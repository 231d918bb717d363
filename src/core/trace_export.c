/* trace_export.c — the tracer: a bounded queue of OTLP/JSON batches and one
 * OTLP/HTTP export in flight at a time.
 *
 * Ended spans are encoded straight into the open batch (the tail of the
 * queue), whose buffer already starts with the request's resource/scope
 * prefix; taking a batch for export appends the closing suffix, and the
 * finished body is sent — and re-sent on a retry — as it is. So a queued
 * span costs its encoded bytes and nothing else.
 *
 *   IDLE ──(batch full, flush, or the interval timer)──▶ SENDING
 *   SENDING ──2xx / permanent error──▶ IDLE (next batch)
 *   SENDING ──network error, 429, 502, 503, 504──▶ BACKOFF ──timer──▶ SENDING
 */
#include "core/trace.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "core/http1_client.h"
#include "core/json.h"
#include "core/log.h"
#include "core/net.h"
#include "core/rand.h"

#define DEFAULT_MAX_QUEUE 2048
#define DEFAULT_MAX_QUEUE_BYTES (16u << 20)
#define DEFAULT_BATCH_SIZE 512
#define DEFAULT_FLUSH_INTERVAL_MS 1000
#define DEFAULT_EXPORT_TIMEOUT_MS 10000
#define DEFAULT_RETRY_INITIAL_MS 1000
#define DEFAULT_RETRY_MAX_MS 30000
/* OTLP responses are an empty object or a partialSuccess: 64 KiB is ample. */
#define MAX_RESPONSE_BODY (64u << 10)

static const char body_suffix[] = "]}]}]}";

struct batch {
    struct batch *next;
    struct buf body;  /* prefix, spans joined by ',', and once taken the suffix */
    uint32_t nspans;
    size_t span_bytes; /* what these spans count against max_queue_bytes */
};

enum export_state { EXPORT_IDLE, EXPORT_SENDING, EXPORT_BACKOFF };

struct trace_tracer {
    struct loop *loop;
    struct trace_config cfg;  /* sizes with defaults applied; strings not kept */
    bool is_enabled;
    char *url;                /* the traces URL; target views into it */
    struct str target;
    char *host_header;
    struct net_addr addr;
    char *prefix;             /* {"resourceSpans":[{"resource":…,"scopeSpans":[{"scope":…,"spans":[ */
    size_t prefix_len;
    struct batch *head, *tail; /* waiting, oldest first; tail may still be filling */
    struct batch *inflight;    /* taken off the queue: sending or in backoff */
    uint64_t queued_bytes;
    struct http1_client *client;
    struct http1_client_call *call;
    enum export_state state;
    uint32_t backoff_ms;      /* the next retry's delay */
    bool is_failing;          /* a failure was logged; log the recovery once */
    struct loop_timer timer;  /* IDLE: flush interval; BACKOFF: retry */
    struct loop_defer defer;  /* export now, outside the caller's stack */
    bool is_flushing;
    void (*flush_cb)(int err, void *arg);
    void *flush_arg;
    int flush_err;
    struct loop_timer flush_timer;
    /* The flush callback runs from here, never from inside http1_client's
     * callback: the caller may well free the tracer (and its client) in it. */
    struct loop_defer flush_defer;
    struct trace_tracer_stats stats;
};

/* ---- config ---------------------------------------------------------------- */

void trace_config_init(struct trace_config *cfg)
{
    *cfg = (struct trace_config){
        .sample_ratio = 1.0,
        .max_queue = DEFAULT_MAX_QUEUE,
        .max_queue_bytes = DEFAULT_MAX_QUEUE_BYTES,
        .batch_size = DEFAULT_BATCH_SIZE,
        .flush_interval_ms = DEFAULT_FLUSH_INTERVAL_MS,
        .export_timeout_ms = DEFAULT_EXPORT_TIMEOUT_MS,
        .retry_initial_ms = DEFAULT_RETRY_INITIAL_MS,
        .retry_max_ms = DEFAULT_RETRY_MAX_MS,
    };
}

static const char *env_nonempty(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

static void env_bad(const char *name, const char **bad_var, int *rc)
{
    if (!*rc && bad_var)
        *bad_var = name;
    *rc = -EINVAL;
}

static void env_u32(const char *name, uint32_t *out, const char **bad_var, int *rc)
{
    const char *v = env_nonempty(name);
    uint64_t n;
    if (!v)
        return;
    if (str_to_u64(str_from_cstr(v), &n) < 0 || n > UINT32_MAX)
        env_bad(name, bad_var, rc);
    else
        *out = (uint32_t)n;
}

int trace_config_from_env(struct trace_config *cfg, const char **bad_var)
{
    int rc = 0;
    const char *v;
    if ((v = env_nonempty("OTEL_SERVICE_NAME")))
        cfg->service_name = v;
    if ((v = env_nonempty("OTEL_EXPORTER_OTLP_ENDPOINT")))
        cfg->endpoint = v;
    if ((v = env_nonempty("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")))
        cfg->traces_endpoint = v;
    env_u32("OTEL_BSP_SCHEDULE_DELAY", &cfg->flush_interval_ms, bad_var, &rc);
    env_u32("OTEL_BSP_EXPORT_TIMEOUT", &cfg->export_timeout_ms, bad_var, &rc);
    env_u32("OTEL_BSP_MAX_QUEUE_SIZE", &cfg->max_queue, bad_var, &rc);
    env_u32("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", &cfg->batch_size, bad_var, &rc);

    const char *sampler = env_nonempty("OTEL_TRACES_SAMPLER");
    if (sampler) {
        if (!strcmp(sampler, "always_on") || !strcmp(sampler, "parentbased_always_on")) {
            cfg->sample_ratio = 1.0;
        } else if (!strcmp(sampler, "always_off") || !strcmp(sampler, "parentbased_always_off")) {
            cfg->sample_ratio = 0.0;
        } else if (!strcmp(sampler, "traceidratio") || !strcmp(sampler, "parentbased_traceidratio")) {
            cfg->sample_ratio = 1.0; /* the spec's default when the argument is absent */
            if ((v = env_nonempty("OTEL_TRACES_SAMPLER_ARG"))) {
                char *end;
                errno = 0;
                double r = strtod(v, &end);
                if (errno || *end || !(r >= 0 && r <= 1))
                    env_bad("OTEL_TRACES_SAMPLER_ARG", bad_var, &rc);
                else
                    cfg->sample_ratio = r;
            }
        } else {
            env_bad("OTEL_TRACES_SAMPLER", bad_var, &rc);
        }
    }
    if ((v = env_nonempty("OTEL_TRACES_EXPORTER"))) {
        if (!strcmp(v, "none"))
            cfg->endpoint = cfg->traces_endpoint = NULL;
        else if (strcmp(v, "otlp") != 0)
            env_bad("OTEL_TRACES_EXPORTER", bad_var, &rc);
    }
    if ((v = env_nonempty("OTEL_SDK_DISABLED"))) {
        if (!strcasecmp(v, "true"))
            cfg->endpoint = cfg->traces_endpoint = NULL;
        else if (strcasecmp(v, "false") != 0)
            env_bad("OTEL_SDK_DISABLED", bad_var, &rc);
    }
    return rc;
}

/* ---- setup ----------------------------------------------------------------- */

/* The traces URL: traces_endpoint as is, or endpoint + "/v1/traces" (one
 * slash). 0 with *out NULL when neither is set. */
static int traces_url(const struct trace_config *cfg, char **out)
{
    *out = NULL;
    if (cfg->traces_endpoint && *cfg->traces_endpoint) {
        *out = strdup(cfg->traces_endpoint);
        return *out ? 0 : -ENOMEM;
    }
    if (!cfg->endpoint || !*cfg->endpoint)
        return 0;
    size_t n = strlen(cfg->endpoint);
    while (n && cfg->endpoint[n - 1] == '/')
        n--;
    if (asprintf(out, "%.*s/v1/traces", (int)n, cfg->endpoint) < 0) {
        *out = NULL;
        return -ENOMEM;
    }
    return 0;
}

/* Resolves t->url into addr, target and Host; logs why when it cannot. 0,
 * -EINVAL (unusable: export stays disabled) or -ENOMEM. */
static int setup_endpoint(struct trace_tracer *t)
{
    struct http1_url u;
    if (http1_url_parse(str_from_cstr(t->url), &u) < 0) {
        log_error("trace export disabled: the OTLP endpoint is not an http:// URL", LOG_STR("endpoint", t->url));
        return -EINVAL;
    }
    if (u.is_tls) {
        log_error("trace export disabled: https OTLP endpoints are not supported yet; use an http:// "
                  "collector address",
                  LOG_STR("endpoint", t->url));
        return -EINVAL;
    }
    if (net_addr_from_host(u.host, u.port, &t->addr) < 0) {
        log_error("trace export disabled: the OTLP endpoint host must be an IP address or localhost "
                  "(no DNS on a loop thread)",
                  LOG_STR("endpoint", t->url));
        return -EINVAL;
    }
    t->target = u.path;
    bool is_v6 = memchr(u.host.p, ':', u.host.n) != NULL;
    if (asprintf(&t->host_header, is_v6 ? "[%.*s]:%u" : "%.*s:%u", STR_FMT(u.host), (unsigned)u.port) < 0) {
        t->host_header = NULL;
        return -ENOMEM;
    }
    return 0;
}

static void jw_attr_str(struct buf *b, int *rc, bool is_first, const char *key, struct str value)
{
    if (*rc)
        return;
    *rc = buf_appendf(b, "%s{\"key\":\"%s\",\"value\":{\"stringValue\":", is_first ? "" : ",", key);
    if (!*rc)
        *rc = json_append_string(b, value);
    if (!*rc)
        *rc = buf_append(b, "}}", 2);
}

/* The body's opening, the same for every batch: the resource (service.name,
 * service.instance.id = hostname-pid, the SDK) and the scope. */
static int build_prefix(struct trace_tracer *t, const struct trace_config *cfg)
{
    char host[256] = "unknown";
    if (gethostname(host, sizeof host - 1) < 0)
        strcpy(host, "unknown");
    host[sizeof host - 1] = '\0';
    char instance[300];
    snprintf(instance, sizeof instance, "%s-%ld", host, (long)getpid());
    const char *service = cfg->service_name && *cfg->service_name ? cfg->service_name : "unknown_service";
    const char *scope = cfg->scope_name && *cfg->scope_name ? cfg->scope_name : "strata";

    struct buf b;
    buf_init(&b, 64 << 10);
    int rc = buf_append_cstr(&b, "{\"resourceSpans\":[{\"resource\":{\"attributes\":[");
    jw_attr_str(&b, &rc, true, "service.name", str_from_cstr(service));
    jw_attr_str(&b, &rc, false, "service.instance.id", str_from_cstr(instance));
    jw_attr_str(&b, &rc, false, "telemetry.sdk.name", STR_LIT("strata"));
    jw_attr_str(&b, &rc, false, "telemetry.sdk.language", STR_LIT("c"));
    if (!rc)
        rc = buf_append_cstr(&b, "]},\"scopeSpans\":[{\"scope\":{\"name\":");
    if (!rc)
        rc = json_append_string(&b, str_from_cstr(scope));
    if (!rc)
        rc = buf_append_cstr(&b, "},\"spans\":[");
    if (rc) {
        buf_free(&b);
        return rc;
    }
    t->prefix = b.data; /* rpos is 0: nothing was consumed */
    t->prefix_len = buf_len(&b);
    return 0;
}

static void timer_cb(struct loop_timer *tm);
static void flush_timer_cb(struct loop_timer *tm);

struct trace_tracer *trace_tracer_new(struct loop *l, const struct trace_config *cfg)
{
    struct trace_config def;
    if (!cfg) {
        trace_config_init(&def);
        cfg = &def;
    }
    if (!(cfg->sample_ratio >= 0 && cfg->sample_ratio <= 1)) {
        errno = EINVAL;
        return NULL;
    }
    struct trace_tracer *t = calloc(1, sizeof *t);
    if (!t) {
        errno = ENOMEM;
        return NULL;
    }
    t->loop = l;
    t->cfg = *cfg;
    t->cfg.service_name = t->cfg.scope_name = t->cfg.endpoint = t->cfg.traces_endpoint = NULL;
    struct trace_config *c = &t->cfg;
    if (!c->max_queue)
        c->max_queue = DEFAULT_MAX_QUEUE;
    if (!c->max_queue_bytes)
        c->max_queue_bytes = DEFAULT_MAX_QUEUE_BYTES;
    if (!c->batch_size)
        c->batch_size = DEFAULT_BATCH_SIZE;
    if (c->batch_size > c->max_queue)
        c->batch_size = c->max_queue;
    if (!c->flush_interval_ms)
        c->flush_interval_ms = DEFAULT_FLUSH_INTERVAL_MS;
    if (!c->export_timeout_ms)
        c->export_timeout_ms = DEFAULT_EXPORT_TIMEOUT_MS;
    if (!c->retry_initial_ms)
        c->retry_initial_ms = DEFAULT_RETRY_INITIAL_MS;
    if (!c->retry_max_ms)
        c->retry_max_ms = DEFAULT_RETRY_MAX_MS;
    if (c->retry_max_ms < c->retry_initial_ms)
        c->retry_max_ms = c->retry_initial_ms;
    loop_timer_init(l, &t->timer, timer_cb, t);
    loop_timer_init(l, &t->flush_timer, flush_timer_cb, t);

    int rc = traces_url(cfg, &t->url);
    if (!rc && t->url) {
        rc = setup_endpoint(t);
        if (rc == -EINVAL)
            rc = 0; /* logged; the tracer runs with export disabled */
        else if (!rc)
            t->is_enabled = true;
    }
    if (!rc && t->is_enabled)
        rc = build_prefix(t, cfg);
    if (!rc && t->is_enabled) {
        struct http1_client_config hc = {
            .request_timeout_ms = c->export_timeout_ms,
            .max_idle_per_upstream = 1, /* one export in flight: one connection */
            .max_response_body = MAX_RESPONSE_BODY,
        };
        t->client = http1_client_new(l, &hc);
        if (!t->client)
            rc = -ENOMEM;
    }
    if (rc) {
        trace_tracer_free(t);
        errno = -rc;
        return NULL;
    }
    if (t->is_enabled)
        log_info("trace export enabled", LOG_STR("endpoint", t->url), LOG_DOUBLE("sample_ratio", c->sample_ratio));
    return t;
}

bool trace_tracer_is_enabled(const struct trace_tracer *t) { return t && t->is_enabled; }

bool trace_tracer_samples_root(const struct trace_tracer *t, const char *trace_id)
{
    return t && trace_sample_ratio(trace_id, t->cfg.sample_ratio);
}

const struct trace_tracer_stats *trace_tracer_stats(const struct trace_tracer *t) { return &t->stats; }
uint64_t trace_tracer_dropped(const struct trace_tracer *t) { return t->stats.dropped; }

static void batch_free(struct batch *b)
{
    buf_free(&b->body);
    free(b);
}

/* An empty batch whose body holds the prefix; NULL on allocation failure. */
static struct batch *batch_new(const struct trace_tracer *t)
{
    struct batch *b = calloc(1, sizeof *b);
    if (!b)
        return NULL;
    /* No bound of its own: max_queue_bytes bounds the spans in it. */
    buf_init(&b->body, SIZE_MAX / 2);
    if (buf_append(&b->body, t->prefix, t->prefix_len) < 0) {
        batch_free(b);
        return NULL;
    }
    return b;
}

void trace_tracer_free(struct trace_tracer *t)
{
    if (!t)
        return;
    if (t->call)
        http1_client_cancel(t->call);
    http1_client_free(t->client);
    loop_timer_stop(&t->timer);
    loop_timer_stop(&t->flush_timer);
    loop_defer_cancel(t->loop, &t->defer);
    loop_defer_cancel(t->loop, &t->flush_defer);
    if (t->inflight)
        batch_free(t->inflight);
    while (t->head) {
        struct batch *next = t->head->next;
        batch_free(t->head);
        t->head = next;
    }
    free(t->prefix);
    free(t->host_header);
    free(t->url);
    free(t);
}

/* ---- the queue ------------------------------------------------------------- */

static void export_cb(void *arg);

/* After a change of queue or state: start what is due. */
static void schedule(struct trace_tracer *t)
{
    if (t->state != EXPORT_IDLE || !t->head)
        return;
    if (t->head->nspans >= t->cfg.batch_size || t->is_flushing) {
        loop_timer_stop(&t->timer);
        loop_defer(t->loop, &t->defer, export_cb, t);
    } else if (!loop_timer_is_active(&t->timer) && loop_timer_start(&t->timer, t->cfg.flush_interval_ms) < 0) {
        loop_defer(t->loop, &t->defer, export_cb, t); /* no timer: send now rather than never */
    }
}

void trace_tracer_submit(struct trace_tracer *t, const struct trace_span *span)
{
    if (!t || !t->is_enabled)
        return;
    if (t->stats.queued >= t->cfg.max_queue) {
        t->stats.dropped++;
        return;
    }
    struct batch *b = t->tail, *fresh = NULL;
    if (!b || b->nspans >= t->cfg.batch_size) {
        fresh = batch_new(t);
        if (!fresh) {
            t->stats.dropped++;
            return;
        }
        b = fresh;
    }
    size_t len0 = buf_len(&b->body);
    int rc = b->nspans ? buf_append(&b->body, ",", 1) : 0;
    if (!rc)
        rc = trace_span_to_json(span, &b->body);
    size_t added = buf_len(&b->body) - len0;
    if (!rc && t->queued_bytes + added > t->cfg.max_queue_bytes)
        rc = -ENOBUFS;
    if (rc) {
        b->body.wpos = b->body.rpos + len0;
        if (fresh)
            batch_free(fresh);
        t->stats.dropped++;
        return;
    }
    if (fresh) {
        if (t->tail)
            t->tail->next = fresh;
        else
            t->head = fresh;
        t->tail = fresh;
    }
    b->nspans++;
    b->span_bytes += added;
    t->stats.queued++;
    t->queued_bytes += added;
    schedule(t);
}

/* ---- export ---------------------------------------------------------------- */

static void flush_report_cb(void *arg)
{
    struct trace_tracer *t = arg;
    void (*cb)(int, void *) = t->flush_cb;
    void *cb_arg = t->flush_arg;
    t->flush_cb = NULL;
    t->flush_arg = NULL;
    if (cb)
        cb(t->flush_err, cb_arg); /* last: it may free t */
}

static void flush_finish(struct trace_tracer *t, int err)
{
    if (!t->is_flushing)
        return;
    t->is_flushing = false;
    t->flush_err = err;
    loop_timer_stop(&t->flush_timer);
    loop_defer(t->loop, &t->flush_defer, flush_report_cb, t);
}

static void flush_timer_cb(struct loop_timer *tm) { flush_finish(tm->data, -ETIMEDOUT); }

/* The in-flight batch is done with: delivered or given up. */
static void batch_done(struct trace_tracer *t)
{
    struct batch *b = t->inflight;
    t->inflight = NULL;
    t->stats.queued -= b->nspans;
    t->queued_bytes -= b->span_bytes;
    batch_free(b);
    t->state = EXPORT_IDLE;
    schedule(t);
    if (t->is_flushing && !t->head)
        flush_finish(t, 0);
}

static void send_batch(struct trace_tracer *t);

static void retry_later(struct trace_tracer *t, uint32_t retry_after_ms)
{
    uint32_t delay = t->backoff_ms;
    /* Up to 20% less: exporters that failed together do not retry together. */
    delay -= (uint32_t)rand_below(delay / 5 + 1);
    if (retry_after_ms)
        delay = retry_after_ms < t->cfg.retry_max_ms ? retry_after_ms : t->cfg.retry_max_ms;
    t->backoff_ms = t->backoff_ms > t->cfg.retry_max_ms / 2 ? t->cfg.retry_max_ms : t->backoff_ms * 2;
    t->stats.retries++;
    t->state = EXPORT_BACKOFF;
    if (loop_timer_start(&t->timer, delay) < 0)
        loop_defer(t->loop, &t->defer, export_cb, t);
}

/* Retry-After in delta-seconds (the HTTP-date form falls back to backoff). */
static uint32_t retry_after_ms(const struct http1_client_response *resp)
{
    const struct http1_header *h = http1_find_header(resp->headers, resp->nheaders, STR_LIT("Retry-After"));
    uint64_t sec;
    if (!h || str_to_u64(h->value, &sec) < 0)
        return 0;
    return sec > UINT32_MAX / 1000 ? UINT32_MAX : (uint32_t)sec * 1000;
}

/* OTLP's partialSuccess.rejectedSpans (int64: a string in proto3 JSON, a
 * number from lenient servers); 0 when absent or unreadable. */
static uint64_t rejected_spans(struct str body)
{
    if (!body.n || body.p[0] != '{')
        return 0;
    json_t *root = json_loadb(body.p, body.n, JSON_REJECT_DUPLICATES, NULL);
    uint64_t n = 0;
    json_t *ps = json_object_get(root, "partialSuccess");
    json_t *r = json_object_get(ps, "rejectedSpans");
    if (json_is_integer(r) && json_integer_value(r) > 0) {
        n = (uint64_t)json_integer_value(r);
    } else if (json_is_string(r)) {
        uint64_t v;
        if (str_to_u64(str_make(json_string_value(r), json_string_length(r)), &v) == 0)
            n = v;
    }
    json_decref(root);
    return n;
}

static void on_response(int err, const struct http1_client_response *resp, void *arg)
{
    struct trace_tracer *t = arg;
    struct batch *b = t->inflight;
    t->call = NULL;
    int status = err ? 0 : resp->status;
    if (status >= 200 && status < 300) {
        uint64_t rejected = rejected_spans(resp->body);
        if (rejected > b->nspans)
            rejected = b->nspans;
        t->stats.exported += b->nspans - rejected;
        t->stats.failed += rejected;
        if (rejected)
            log_warn("trace export: the receiver rejected spans", LOG_UINT("rejected", rejected),
                     LOG_STR("endpoint", t->url));
        if (t->is_failing)
            log_info("trace export recovered", LOG_STR("endpoint", t->url));
        t->is_failing = false;
        batch_done(t);
        return;
    }
    /* OTLP/HTTP: only these statuses (and no response at all) are worth a
     * retry; any other answer would come back the same. */
    if (err || status == 429 || status == 502 || status == 503 || status == 504) {
        if (!t->is_failing && err)
            log_warn("trace export failed; retrying with backoff", LOG_STR("endpoint", t->url),
                     LOG_ERRNO("error", err), LOG_UINT("spans", b->nspans));
        else if (!t->is_failing)
            log_warn("trace export failed; retrying with backoff", LOG_STR("endpoint", t->url),
                     LOG_INT("status", status), LOG_UINT("spans", b->nspans));
        t->is_failing = true;
        retry_later(t, err ? 0 : retry_after_ms(resp));
        return;
    }
    log_error("trace export rejected; batch dropped", LOG_STR("endpoint", t->url), LOG_INT("status", status),
              LOG_UINT("spans", b->nspans));
    t->stats.failed += b->nspans;
    batch_done(t);
}

static void send_batch(struct trace_tracer *t)
{
    static const struct http1_header headers[] = {
        { STR_LIT("Content-Type"), STR_LIT("application/json") },
    };
    uint32_t timeout = t->cfg.export_timeout_ms;
    if (t->is_flushing) {
        uint64_t now = loop_now_ms(t->loop), end = t->flush_timer.deadline_ms;
        uint64_t left = end > now ? end - now : 1;
        if (left < timeout)
            timeout = (uint32_t)left;
    }
    struct http1_client_request req = {
        .addr = t->addr,
        .method = STR_LIT("POST"),
        .target = t->target,
        .host = str_from_cstr(t->host_header),
        .headers = headers,
        .nheaders = 1,
        .body = buf_str(&t->inflight->body),
        .timeout_ms = timeout,
    };
    t->state = EXPORT_SENDING;
    t->stats.requests++;
    int rc = http1_client_send(t->client, &req, on_response, t, &t->call);
    if (rc == -EINVAL) { /* the request itself is malformed: it will not get better */
        t->call = NULL;
        t->stats.failed += t->inflight->nspans;
        batch_done(t);
    } else if (rc < 0) {
        t->call = NULL;
        retry_later(t, 0); /* -ENOMEM: memory may come back */
    }
}

/* Takes the oldest batch and sends it. */
static void export_next(struct trace_tracer *t)
{
    struct batch *b = t->head;
    if (!b) {
        if (t->is_flushing)
            flush_finish(t, 0);
        return;
    }
    t->head = b->next;
    if (!t->head)
        t->tail = NULL;
    b->next = NULL;
    t->inflight = b;
    t->backoff_ms = t->cfg.retry_initial_ms;
    if (buf_append(&b->body, body_suffix, sizeof body_suffix - 1) < 0) {
        t->stats.failed += b->nspans;
        batch_done(t);
        return;
    }
    send_batch(t);
}

static void export_cb(void *arg)
{
    struct trace_tracer *t = arg;
    if (t->state == EXPORT_IDLE)
        export_next(t);
    else if (t->state == EXPORT_BACKOFF)
        send_batch(t);
}

static void timer_cb(struct loop_timer *tm) { export_cb(tm->data); }

int trace_tracer_flush(struct trace_tracer *t, uint32_t timeout_ms, void (*cb)(int err, void *arg), void *arg)
{
    if (t->is_flushing || t->flush_defer.is_pending)
        return -EBUSY;
    int rc = loop_timer_start(&t->flush_timer, timeout_ms);
    if (rc < 0)
        return rc;
    t->is_flushing = true;
    t->flush_cb = cb;
    t->flush_arg = arg;
    if (t->state != EXPORT_SENDING) {
        /* Idle: send what is queued now. In backoff: retry now; later
         * failures still back off, within the deadline. */
        loop_timer_stop(&t->timer);
        loop_defer(t->loop, &t->defer, export_cb, t);
    }
    return 0;
}
