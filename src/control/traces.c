/* traces.c — OTLP/HTTP JSON in, recent traces out (traces.h).
 *
 * A request is decoded in two passes so that a malformed body changes
 * nothing: first every span is checked and converted into a pending list
 * (a structural error answers 400 and frees the list; a malformed span is
 * only counted as rejected), then the list is stored.
 *
 * The store: traces in a hash table by trace id and in a list by arrival
 * (oldest first, the eviction order); each trace holds its spans in an
 * array. A span keeps its strings and its attributes as compact JSON text,
 * so what it costs is known exactly and is charged to TRACES_MAX_BYTES. */
#include "control/traces.h"

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "core/json.h"
#include "core/log.h"
#include "core/rand.h"
#include "core/str.h"

#define DEFAULT_MAX_TRACES 1000
#define DEFAULT_MAX_SPANS 50000
/* OTLP nests AnyValue in arrays and kvlists without a limit; ours: the
 * envelope is 7 levels deep, a span's attributes 4 more, and 4 more levels
 * of nested values are plenty for attributes. Deeper → 400. */
#define BODY_MAX_DEPTH 32
#define VALUE_MAX_DEPTH 3
/* Per span: attribute values cut at 512 bytes, at most 64 attributes and
 * 4 KiB of them as JSON (more are dropped and counted in the span's
 * dropped_attributes), names and messages cut at 256 bytes, service names
 * at 128. A span then costs at most ~5 KiB. */
#define MAX_VALUE 512
#define MAX_KEY 128
#define MAX_ATTRS 64
#define MAX_ATTRS_JSON 4096
#define MAX_NAME 256
#define MAX_SERVICE 128
#define MAX_LIST_ITEMS 32
/* Per-span bookkeeping charged on top of its strings. */
#define SPAN_OVERHEAD 128
#define DEFAULT_LIMIT 20
#define MAX_LIMIT 1000

struct span_rec {
    char span_id[17];
    char parent_id[17]; /* "" for a root */
    uint8_t kind;       /* OTLP SpanKind 0..5 */
    uint8_t status;     /* OTLP Status.code 0..2 */
    uint64_t start_ns, end_ns;
    uint32_t dropped_attrs;
    char *name, *service, *attrs, *status_msg; /* attrs: a JSON object's text */
    size_t cost;
};

struct trace_rec {
    char id[33];
    struct trace_rec *hnext;        /* hash chain */
    struct trace_rec *older, *newer; /* arrival list */
    struct span_rec *spans;
    size_t nspans, cap;
    size_t bytes;
};

struct traces {
    size_t max_traces, max_spans;
    struct trace_rec **buckets;
    size_t nbuckets; /* a power of two */
    uint64_t seed;
    struct trace_rec *oldest, *newest;
    struct traces_stats stats;
    struct admin_auth auth;
};

/* ---- the store ----------------------------------------------------------- */

struct traces *traces_new(size_t max_traces, size_t max_spans)
{
    struct traces *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->max_traces = max_traces ? max_traces : DEFAULT_MAX_TRACES;
    t->max_spans = max_spans ? max_spans : DEFAULT_MAX_SPANS;
    /* Twice the traces, rounded up to a power of two: short chains. */
    t->nbuckets = 16;
    while (t->nbuckets < 2 * t->max_traces && t->nbuckets < ((size_t)1 << 24))
        t->nbuckets <<= 1;
    t->buckets = calloc(t->nbuckets, sizeof *t->buckets);
    if (!t->buckets) {
        free(t);
        return NULL;
    }
    /* Seeded: ids come from outside, chains must not be steerable. */
    t->seed = rand_u64();
    return t;
}

static void span_clear(struct span_rec *s)
{
    free(s->name);
    free(s->service);
    free(s->attrs);
    free(s->status_msg);
}

static void trace_rec_free(struct trace_rec *tr)
{
    for (size_t i = 0; i < tr->nspans; i++)
        span_clear(&tr->spans[i]);
    free(tr->spans);
    free(tr);
}

void traces_free(struct traces *t)
{
    if (!t)
        return;
    struct trace_rec *tr = t->oldest;
    while (tr) {
        struct trace_rec *next = tr->newer;
        trace_rec_free(tr);
        tr = next;
    }
    free(t->buckets);
    free(t);
}

void traces_get_stats(const struct traces *t, struct traces_stats *out) { *out = t->stats; }

static size_t bucket_of(const struct traces *t, const char *id)
{
    uint64_t h = 1469598103934665603ull ^ t->seed; /* FNV-1a */
    for (int i = 0; i < 32; i++) {
        h ^= (unsigned char)id[i];
        h *= 1099511628211ull;
    }
    h ^= h >> 29;
    return (size_t)(h & (t->nbuckets - 1));
}

static struct trace_rec *trace_find(const struct traces *t, const char *id)
{
    for (struct trace_rec *tr = t->buckets[bucket_of(t, id)]; tr; tr = tr->hnext)
        if (!memcmp(tr->id, id, 32))
            return tr;
    return NULL;
}

static void trace_remove(struct traces *t, struct trace_rec *tr)
{
    struct trace_rec **pp = &t->buckets[bucket_of(t, tr->id)];
    while (*pp != tr)
        pp = &(*pp)->hnext;
    *pp = tr->hnext;
    if (tr->older)
        tr->older->newer = tr->newer;
    else
        t->oldest = tr->newer;
    if (tr->newer)
        tr->newer->older = tr->older;
    else
        t->newest = tr->older;
    t->stats.traces--;
    t->stats.spans -= tr->nspans;
    t->stats.bytes -= tr->bytes;
    trace_rec_free(tr);
}

/* Evicts the oldest trace other than keep; false when there is none. */
static bool evict_one(struct traces *t, const struct trace_rec *keep)
{
    struct trace_rec *victim = t->oldest;
    if (victim == keep)
        victim = victim->newer;
    if (!victim)
        return false;
    t->stats.evicted_traces++;
    t->stats.evicted_spans += victim->nspans;
    trace_remove(t, victim);
    return true;
}

static struct trace_rec *trace_get_or_add(struct traces *t, const char *id)
{
    struct trace_rec *tr = trace_find(t, id);
    if (tr)
        return tr;
    while (t->stats.traces >= t->max_traces)
        if (!evict_one(t, NULL))
            break;
    tr = calloc(1, sizeof *tr);
    if (!tr)
        return NULL;
    memcpy(tr->id, id, 33);
    size_t b = bucket_of(t, id);
    tr->hnext = t->buckets[b];
    t->buckets[b] = tr;
    tr->older = t->newest;
    if (t->newest)
        t->newest->newer = tr;
    else
        t->oldest = tr;
    t->newest = tr;
    t->stats.traces++;
    return tr;
}

/* Stores *s (taking its strings) in trace id; on any refusal frees them. */
static void store_span(struct traces *t, const char *id, struct span_rec *s)
{
    struct trace_rec *tr = trace_get_or_add(t, id);
    if (!tr)
        goto drop;
    for (size_t i = 0; i < tr->nspans; i++) {
        if (!memcmp(tr->spans[i].span_id, s->span_id, 16)) {
            t->stats.duplicate_spans++;
            span_clear(s);
            return;
        }
    }
    if (tr->nspans >= TRACES_MAX_SPANS_PER_TRACE)
        goto drop;
    while (t->stats.spans + 1 > t->max_spans || t->stats.bytes + s->cost > TRACES_MAX_BYTES)
        if (!evict_one(t, tr))
            break;
    if (t->stats.spans + 1 > t->max_spans || t->stats.bytes + s->cost > TRACES_MAX_BYTES)
        goto drop; /* this trace alone fills the store */
    if (tr->nspans == tr->cap) {
        size_t cap = tr->cap ? tr->cap * 2 : 8;
        struct span_rec *p = realloc(tr->spans, cap * sizeof *p);
        if (!p)
            goto drop;
        tr->spans = p;
        tr->cap = cap;
    }
    tr->spans[tr->nspans++] = *s;
    tr->bytes += s->cost;
    t->stats.spans++;
    t->stats.bytes += s->cost;
    t->stats.received_spans++;
    return;
drop:
    t->stats.dropped_spans++;
    span_clear(s);
    if (tr && !tr->nspans)
        trace_remove(t, tr);
}

/* ---- OTLP JSON decoding ---------------------------------------------------- */

/* A decoded span waiting to be stored. */
struct pending {
    char trace_id[33];
    struct span_rec s;
};

struct decode {
    struct pending *v;
    size_t n, cap;
    uint64_t rejected;
    char first_reject[160]; /* why the first span was rejected */
    char err[256];          /* a structural error: the whole body is refused */
};

static void decode_free(struct decode *d)
{
    for (size_t i = 0; i < d->n; i++)
        span_clear(&d->v[i].s);
    free(d->v);
}

static int hex_lower(char c)
{
    if (c >= '0' && c <= '9')
        return c;
    if (c >= 'a' && c <= 'f')
        return c;
    if (c >= 'A' && c <= 'F')
        return c + 32;
    return -1;
}

/* A hex id of n digits (either case, as OTLP/JSON allows) into out,
 * lowercased; all zeros is invalid. 0 or -EINVAL. */
static int parse_id(const json_t *v, size_t n, char *out)
{
    if (!json_is_string(v) || json_string_length(v) != n)
        return -EINVAL;
    const char *p = json_string_value(v);
    bool is_nonzero = false;
    for (size_t i = 0; i < n; i++) {
        int c = hex_lower(p[i]);
        if (c < 0)
            return -EINVAL;
        out[i] = (char)c;
        is_nonzero |= c != '0';
    }
    out[n] = '\0';
    return is_nonzero ? 0 : -EINVAL;
}

/* fixed64 nanoseconds: a decimal string (proto3 JSON) or a JSON integer. */
static int parse_nanos(const json_t *v, uint64_t *out)
{
    if (json_is_integer(v) && json_integer_value(v) >= 0) {
        *out = (uint64_t)json_integer_value(v);
        return 0;
    }
    if (json_is_string(v))
        return str_to_u64(str_make(json_string_value(v), json_string_length(v)), out) < 0 ? -EINVAL : 0;
    return -EINVAL;
}

/* An enum as its number or, as proto3 JSON also allows, its name (the
 * names' common prefix given). -1 when neither. */
static int parse_enum(const json_t *v, const char *prefix, const char *const *names, int n)
{
    if (json_is_integer(v)) {
        json_int_t i = json_integer_value(v);
        return i >= 0 && i < n ? (int)i : -1;
    }
    if (!json_is_string(v))
        return -1;
    const char *s = json_string_value(v);
    size_t pl = strlen(prefix);
    if (strncmp(s, prefix, pl))
        return -1;
    for (int i = 0; i < n; i++)
        if (!strcmp(s + pl, names[i]))
            return i;
    return -1;
}

/* The longest prefix of s of at most max bytes that does not split a UTF-8
 * sequence (jansson strings are valid UTF-8). */
static size_t cut_utf8(const char *s, size_t n, size_t max)
{
    if (n <= max)
        return n;
    while (max > 0 && ((unsigned char)s[max] & 0xc0) == 0x80)
        max--;
    return max;
}

static char *dup_cut(const char *s, size_t n, size_t max)
{
    n = cut_utf8(s, n, max);
    char *p = malloc(n + 1);
    if (p) {
        memcpy(p, s, n);
        p[n] = '\0';
    }
    return p;
}

static json_t *string_cut(const json_t *v)
{
    size_t n = cut_utf8(json_string_value(v), json_string_length(v), MAX_VALUE);
    return json_stringn(json_string_value(v), n);
}

/* OTLP AnyValue → plain JSON (a string, number, bool, array, object or
 * null). NULL when v is not an AnyValue (the attribute is dropped). */
static json_t *any_value(const json_t *v, int depth)
{
    if (!json_is_object(v))
        return NULL;
    if (json_object_size(v) == 0)
        return json_null(); /* an empty AnyValue: OTLP's "no value" */
    const json_t *x;
    if ((x = json_object_get(v, "stringValue")))
        return json_is_string(x) ? string_cut(x) : NULL;
    if ((x = json_object_get(v, "boolValue")))
        return json_is_boolean(x) ? json_boolean(json_is_true(x)) : NULL;
    if ((x = json_object_get(v, "intValue"))) {
        if (json_is_integer(x))
            return json_integer(json_integer_value(x));
        if (!json_is_string(x))
            return NULL;
        const char *s = json_string_value(x);
        char *end;
        errno = 0;
        long long i = strtoll(s, &end, 10);
        return *s && !*end && !errno ? json_integer(i) : NULL;
    }
    if ((x = json_object_get(v, "doubleValue"))) {
        if (json_is_number(x))
            return json_real(json_number_value(x));
        return json_is_string(x) ? string_cut(x) : NULL; /* "NaN", "Infinity" */
    }
    if ((x = json_object_get(v, "bytesValue")))
        return json_is_string(x) ? string_cut(x) : NULL; /* base64, kept as is */
    bool is_array = (x = json_object_get(v, "arrayValue")) != NULL;
    if (!is_array && !(x = json_object_get(v, "kvlistValue")))
        return NULL;
    if (depth >= VALUE_MAX_DEPTH || !json_is_object(x))
        return NULL;
    const json_t *values = json_object_get(x, "values");
    json_t *out = is_array ? json_array() : json_object();
    if (!out)
        return NULL;
    size_t i;
    const json_t *e;
    json_array_foreach(values, i, e)
    {
        if (i >= MAX_LIST_ITEMS)
            break;
        if (is_array) {
            json_t *c = any_value(e, depth + 1);
            json_array_append_new(out, c ? c : json_null());
            continue;
        }
        const char *k = json_string_value(json_object_get(e, "key"));
        if (!k || strlen(k) > MAX_KEY)
            continue;
        json_t *c = any_value(json_object_get(e, "value"), depth + 1);
        if (c)
            json_object_set_new(out, k, c);
    }
    return out;
}

/* attributes: [{key, value: AnyValue}] → compact JSON object text within
 * MAX_ATTRS_JSON; what does not fit or is not an attribute is counted. */
static char *attrs_text(const json_t *attrs, uint32_t *dropped)
{
    json_t *obj = json_object();
    if (!obj)
        return NULL;
    size_t budget = 2, i;
    const json_t *a;
    json_array_foreach(attrs, i, a)
    {
        const char *k = json_string_value(json_object_get(a, "key"));
        json_t *v = k && strlen(k) <= MAX_KEY && json_object_size(obj) < MAX_ATTRS
                        ? any_value(json_object_get(a, "value"), 0)
                        : NULL;
        size_t need = v ? json_dumpb(v, NULL, 0, JSON_COMPACT | JSON_ENCODE_ANY) + 2 * strlen(k) + 8 : 0;
        if (!v || budget + need > MAX_ATTRS_JSON) {
            json_decref(v);
            (*dropped)++;
            continue;
        }
        budget += need;
        json_object_set_new(obj, k, v); /* a repeated key: the last wins */
    }
    char *text = json_dumps(obj, JSON_COMPACT);
    json_decref(obj);
    return text;
}

static const char *const kind_names[] = { "UNSPECIFIED", "INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER" };
static const char *const status_names[] = { "UNSET", "OK", "ERROR" };

static void reject(struct decode *d, const char *why)
{
    if (!d->rejected++)
        snprintf(d->first_reject, sizeof d->first_reject, "%s", why);
}

/* One Span object into d (or rejected). -ENOMEM only. */
static int decode_span(struct decode *d, const json_t *sp, const char *service)
{
    struct pending p = { 0 };
    uint64_t end = 0;
    if (parse_id(json_object_get(sp, "traceId"), 32, p.trace_id) < 0) {
        reject(d, "traceId: expected 32 hex digits, not all zero");
        return 0;
    }
    if (parse_id(json_object_get(sp, "spanId"), 16, p.s.span_id) < 0) {
        reject(d, "spanId: expected 16 hex digits, not all zero");
        return 0;
    }
    const json_t *parent = json_object_get(sp, "parentSpanId");
    if (parent && !(json_is_string(parent) && json_string_length(parent) == 0) &&
        parse_id(parent, 16, p.s.parent_id) < 0) {
        /* All zeros means "no parent" in some SDKs: a root. */
        bool is_zero = json_is_string(parent) && json_string_length(parent) == 16 &&
                       strspn(json_string_value(parent), "0") == 16;
        if (!is_zero) {
            reject(d, "parentSpanId: expected 16 hex digits or \"\"");
            return 0;
        }
        p.s.parent_id[0] = '\0';
    }
    if (parse_nanos(json_object_get(sp, "startTimeUnixNano"), &p.s.start_ns) < 0 || !p.s.start_ns) {
        reject(d, "startTimeUnixNano: expected nanoseconds as a decimal string or an integer");
        return 0;
    }
    const json_t *ej = json_object_get(sp, "endTimeUnixNano");
    if (!ej)
        end = p.s.start_ns;
    else if (parse_nanos(ej, &end) < 0 || end < p.s.start_ns) {
        reject(d, "endTimeUnixNano: expected nanoseconds, not before startTimeUnixNano");
        return 0;
    }
    p.s.end_ns = end;
    const json_t *kind = json_object_get(sp, "kind");
    int k = kind ? parse_enum(kind, "SPAN_KIND_", kind_names, 6) : 0;
    if (k < 0) {
        reject(d, "kind: expected a SpanKind (0-5)");
        return 0;
    }
    p.s.kind = (uint8_t)k;
    const json_t *status = json_object_get(sp, "status"), *code = json_object_get(status, "code");
    int c = code ? parse_enum(code, "STATUS_CODE_", status_names, 3) : 0;
    if (c < 0 || (status && !json_is_object(status))) {
        reject(d, "status.code: expected 0, 1 or 2");
        return 0;
    }
    p.s.status = (uint8_t)c;
    const json_t *name = json_object_get(sp, "name");
    if (name && !json_is_string(name)) {
        reject(d, "name: expected a string");
        return 0;
    }
    const json_t *attrs = json_object_get(sp, "attributes");
    if (attrs && !json_is_array(attrs)) {
        reject(d, "attributes: expected an array");
        return 0;
    }
    const char *nm = name ? json_string_value(name) : "";
    p.s.name = dup_cut(nm, strlen(nm), MAX_NAME);
    p.s.service = strdup(service);
    p.s.attrs = attrs_text(attrs, &p.s.dropped_attrs);
    const json_t *msg = json_object_get(status, "message");
    bool has_msg = json_is_string(msg) && json_string_length(msg) && c == 2; /* OTLP: ERROR only */
    if (has_msg)
        p.s.status_msg = dup_cut(json_string_value(msg), json_string_length(msg), MAX_NAME);
    if (!p.s.name || !p.s.service || !p.s.attrs || (has_msg && !p.s.status_msg)) {
        span_clear(&p.s);
        return -ENOMEM;
    }
    p.s.cost = SPAN_OVERHEAD + strlen(p.s.name) + strlen(p.s.service) + strlen(p.s.attrs) +
               (p.s.status_msg ? strlen(p.s.status_msg) : 0);
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 64;
        struct pending *v = realloc(d->v, cap * sizeof *v);
        if (!v) {
            span_clear(&p.s);
            return -ENOMEM;
        }
        d->v = v;
        d->cap = cap;
    }
    d->v[d->n++] = p;
    return 0;
}

/* service.name of a Resource, cut; "unknown_service" (the SDKs' default)
 * when absent. */
static void resource_service(const json_t *resource, char *out, size_t n)
{
    snprintf(out, n, "unknown_service");
    size_t i;
    const json_t *a;
    json_array_foreach(json_object_get(resource, "attributes"), i, a)
    {
        const char *k = json_string_value(json_object_get(a, "key"));
        const json_t *v = json_object_get(json_object_get(a, "value"), "stringValue");
        if (k && !strcmp(k, "service.name") && json_is_string(v) && json_string_length(v)) {
            size_t len = cut_utf8(json_string_value(v), json_string_length(v), n - 1);
            memcpy(out, json_string_value(v), len);
            out[len] = '\0';
        }
    }
}

/* An optional array field: NULL when absent; sets d->err when present and
 * not an array. */
static const json_t *opt_array(struct decode *d, const json_t *obj, const char *key, const char *where)
{
    const json_t *v = json_object_get(obj, key);
    if (v && !json_is_array(v) && !json_is_null(v))
        snprintf(d->err, sizeof d->err, "%s.%s: expected an array", where, key);
    return json_is_array(v) ? v : NULL;
}

/* ExportTraceServiceRequest → d. -EINVAL with d->err (400), -ENOMEM. */
static int decode_request(struct decode *d, const json_t *root)
{
    if (!json_is_object(root)) {
        snprintf(d->err, sizeof d->err, "expected an OTLP ExportTraceServiceRequest object");
        return -EINVAL;
    }
    const json_t *rss = opt_array(d, root, "resourceSpans", "body");
    size_t i, j, k;
    const json_t *rs, *ss, *sp;
    json_array_foreach(rss, i, rs)
    {
        if (!json_is_object(rs)) {
            snprintf(d->err, sizeof d->err, "resourceSpans[%zu]: expected an object", i);
            return -EINVAL;
        }
        const json_t *res = json_object_get(rs, "resource");
        if (res && !json_is_object(res) && !json_is_null(res)) {
            snprintf(d->err, sizeof d->err, "resourceSpans[%zu].resource: expected an object", i);
            return -EINVAL;
        }
        char service[MAX_SERVICE + 1];
        resource_service(res, service, sizeof service);
        char where[96];
        snprintf(where, sizeof where, "resourceSpans[%zu]", i);
        const json_t *sss = opt_array(d, rs, "scopeSpans", where);
        if (d->err[0])
            return -EINVAL;
        json_array_foreach(sss, j, ss)
        {
            snprintf(where, sizeof where, "resourceSpans[%zu].scopeSpans[%zu]", i, j);
            if (!json_is_object(ss)) {
                snprintf(d->err, sizeof d->err, "%s: expected an object", where);
                return -EINVAL;
            }
            const json_t *spans = opt_array(d, ss, "spans", where);
            if (d->err[0])
                return -EINVAL;
            json_array_foreach(spans, k, sp)
            {
                if (!json_is_object(sp)) {
                    snprintf(d->err, sizeof d->err, "%s.spans[%zu]: expected an object", where, k);
                    return -EINVAL;
                }
                int rc = decode_span(d, sp, service);
                if (rc < 0)
                    return rc;
            }
        }
    }
    return d->err[0] ? -EINVAL : 0;
}

/* ---- POST /v1/traces ----------------------------------------------------- */

static void post_traces(struct service_req *r, void *arg)
{
    struct traces *t = arg;
    t->stats.requests++;
    struct str ct = service_req_header(r, "Content-Type");
    struct str ce = service_req_header(r, "Content-Encoding");
    struct str body = service_req_body(r);
    size_t ctn = 0;
    while (ct.p && ctn < ct.n && ct.p[ctn] != ';' && ct.p[ctn] != ' ')
        ctn++;
    if (!ct.p || !str_eq_nocase(str_make(ct.p, ctn), STR_LIT("application/json"))) {
        t->stats.bad_requests++;
        service_reply_error(r, 415, "unsupported_media_type",
                            "OTLP/HTTP JSON only: Content-Type must be application/json (protobuf is not accepted)");
        return;
    }
    if (ce.p && ce.n && !str_eq_nocase(ce, STR_LIT("identity"))) {
        t->stats.bad_requests++;
        service_reply_error(r, 415, "unsupported_media_type",
                            "Content-Encoding is not supported: send the OTLP JSON uncompressed");
        return;
    }
    if (body.n > TRACES_MAX_BODY) {
        t->stats.bad_requests++;
        service_reply_error(r, 413, "payload_too_large", "an OTLP request is at most 4 MiB");
        return;
    }
    json_t *root = NULL;
    struct json_error jerr;
    int rc = json_parse_body(body, BODY_MAX_DEPTH, &root, &jerr);
    if (rc < 0) {
        t->stats.bad_requests++;
        if (rc == -ENOMEM)
            service_reply_error(r, 503, "unavailable", "out of memory");
        else
            service_reply_error(r, 400, "invalid_json", jerr.message);
        return;
    }
    struct decode d = { 0 };
    rc = decode_request(&d, root);
    json_decref(root);
    if (rc < 0) {
        decode_free(&d);
        t->stats.bad_requests++;
        if (rc == -ENOMEM)
            service_reply_error(r, 503, "unavailable", "out of memory");
        else
            service_reply_error(r, 400, "invalid_otlp", d.err);
        return;
    }
    for (size_t i = 0; i < d.n; i++)
        store_span(t, d.v[i].trace_id, &d.v[i].s); /* takes the strings */
    free(d.v);
    t->stats.rejected_spans += d.rejected;
    if (!d.rejected) {
        service_reply_json(r, 200, json_object());
        return;
    }
    /* OTLP partial success: the rest was kept; rejectedSpans is int64 (a
     * string in proto3 JSON). */
    char n[24];
    snprintf(n, sizeof n, "%" PRIu64, d.rejected);
    log_warn("OTLP spans rejected", LOG_UINT("rejected", d.rejected), LOG_STR("reason", d.first_reject));
    service_reply_json(r, 200, json_pack("{s:{s:s, s:s}}", "partialSuccess", "rejectedSpans", n, "errorMessage",
                                         d.first_reject));
}

/* ---- queries ------------------------------------------------------------- */


struct summary {
    const struct trace_rec *tr;
    const struct span_rec *root;
    uint64_t start, end;
    bool is_error;
};

static int cmp_id(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Is id a span of tr? ids: tr's span ids sorted (NULL: search linearly,
 * for small traces or when memory is short). */
static bool has_span(const struct trace_rec *tr, const char **ids, const char *id)
{
    if (ids)
        return bsearch(&id, ids, tr->nspans, sizeof *ids, cmp_id) != NULL;
    for (size_t i = 0; i < tr->nspans; i++)
        if (!strcmp(tr->spans[i].span_id, id))
            return true;
    return false;
}

/* The root: the earliest span whose parent is not in the trace (the true
 * root, or the first span under a caller that exported nothing). */
static void summarize(const struct trace_rec *tr, struct summary *s)
{
    *s = (struct summary){ .tr = tr, .start = UINT64_MAX };
    /* 32 spans: past that a sorted index beats n² comparisons. */
    const char **ids = tr->nspans > 32 ? malloc(tr->nspans * sizeof *ids) : NULL;
    if (ids) {
        for (size_t i = 0; i < tr->nspans; i++)
            ids[i] = tr->spans[i].span_id;
        qsort(ids, tr->nspans, sizeof *ids, cmp_id);
    }
    for (size_t i = 0; i < tr->nspans; i++) {
        const struct span_rec *sp = &tr->spans[i];
        if (sp->start_ns < s->start)
            s->start = sp->start_ns;
        if (sp->end_ns > s->end)
            s->end = sp->end_ns;
        s->is_error |= sp->status == 2;
        bool is_top = !sp->parent_id[0] || !has_span(tr, ids, sp->parent_id);
        if (is_top && (!s->root || sp->start_ns < s->root->start_ns ||
                       (sp->start_ns == s->root->start_ns && !sp->parent_id[0])))
            s->root = sp;
    }
    free(ids);
}

static int by_start_desc(const void *a, const void *b)
{
    const struct summary *x = a, *y = b;
    return x->start < y->start ? 1 : x->start > y->start ? -1 : 0;
}

static json_t *nanos_json(uint64_t ns)
{
    char b[24];
    snprintf(b, sizeof b, "%" PRIu64, ns);
    return json_string(b);
}

/* RFC 3339 UTC with milliseconds. */
static json_t *time_json(uint64_t ns)
{
    time_t sec = (time_t)(ns / 1000000000ull);
    struct tm tm;
    char b[40];
    if (!gmtime_r(&sec, &tm))
        return json_null();
    size_t n = strftime(b, sizeof b, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(b + n, sizeof b - n, ".%03uZ", (unsigned)(ns / 1000000ull % 1000));
    return json_string(b);
}

static json_t *services_json(const struct trace_rec *tr)
{
    json_t *a = json_array();
    for (size_t i = 0; i < tr->nspans; i++) {
        const char *svc = tr->spans[i].service;
        bool seen = false;
        for (size_t j = 0; j < i && !seen; j++)
            seen = !strcmp(tr->spans[j].service, svc);
        if (!seen)
            json_array_append_new(a, json_string(svc));
    }
    return a;
}

static json_t *stats_json(const struct traces *t)
{
    const struct traces_stats *s = &t->stats;
    return json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "traces", (json_int_t)s->traces,
                     "spans", (json_int_t)s->spans, "bytes", (json_int_t)s->bytes, "max_traces",
                     (json_int_t)t->max_traces, "max_spans", (json_int_t)t->max_spans, "received_spans",
                     (json_int_t)s->received_spans, "rejected_spans", (json_int_t)s->rejected_spans,
                     "duplicate_spans", (json_int_t)s->duplicate_spans, "dropped_spans",
                     (json_int_t)s->dropped_spans, "evicted_traces", (json_int_t)s->evicted_traces, "evicted_spans",
                     (json_int_t)s->evicted_spans);
}

static void list_traces(struct service_req *r, void *arg)
{
    struct traces *t = arg;
    if (!admin_authorized(&t->auth, r))
        return;
    struct str q = service_req_request(r)->query;
    char service[MAX_SERVICE + 1], limit_s[16], mindur_s[32], error_s[8];
    int has_service = str_query_get(q, "service", service, sizeof service);
    int has_limit = str_query_get(q, "limit", limit_s, sizeof limit_s);
    int has_mindur = str_query_get(q, "min_duration_ms", mindur_s, sizeof mindur_s);
    int has_error = str_query_get(q, "error", error_s, sizeof error_s);
    uint64_t limit = DEFAULT_LIMIT;
    double min_ms = 0;
    const char *bad = has_service < 0 ? "service: malformed or longer than 128 bytes" : NULL;
    if (!bad && (has_limit < 0 || (has_limit && (str_to_u64(str_from_cstr(limit_s), &limit) < 0 || limit < 1 ||
                                                 limit > MAX_LIMIT))))
        bad = "limit: expected an integer 1..1000";
    if (!bad && has_mindur) {
        char *end = NULL;
        if (has_mindur > 0)
            min_ms = strtod(mindur_s, &end);
        if (has_mindur < 0 || !mindur_s[0] || *end || !(min_ms >= 0 && min_ms < 1e12))
            bad = "min_duration_ms: expected a number of milliseconds ≥ 0";
    }
    if (!bad && has_error && (has_error < 0 || (strcmp(error_s, "true") && strcmp(error_s, "false"))))
        bad = "error: expected true or false";
    if (bad) {
        service_reply_error(r, 400, "invalid_query", bad);
        return;
    }
    bool want_error = has_error > 0 && !strcmp(error_s, "true");
    struct summary *v = t->stats.traces ? calloc(t->stats.traces, sizeof *v) : NULL;
    if (t->stats.traces && !v) {
        service_reply_error(r, 503, "unavailable", "out of memory");
        return;
    }
    size_t n = 0;
    for (const struct trace_rec *tr = t->newest; tr; tr = tr->older) {
        struct summary s;
        summarize(tr, &s);
        if (has_error > 0 && s.is_error != want_error)
            continue;
        if ((double)(s.end - s.start) / 1e6 < min_ms)
            continue;
        if (has_service > 0) {
            bool found = false;
            for (size_t i = 0; i < tr->nspans && !found; i++)
                found = !strcmp(tr->spans[i].service, service);
            if (!found)
                continue;
        }
        v[n++] = s;
    }
    qsort(v, n, sizeof *v, by_start_desc);
    json_t *list = json_array();
    for (size_t i = 0; i < n && i < limit; i++) {
        const struct summary *s = &v[i];
        json_t *o = json_pack("{s:s, s:s, s:s, s:o, s:o, s:f, s:I, s:o, s:b}", "trace_id", s->tr->id, "root_service",
                              s->root->service, "root_name", s->root->name, "start", time_json(s->start),
                              "start_unix_nano", nanos_json(s->start), "duration_ms",
                              (double)(s->end - s->start) / 1e6, "spans", (json_int_t)s->tr->nspans, "services",
                              services_json(s->tr), "error", s->is_error);
        json_array_append_new(list, o);
    }
    free(v);
    service_reply_json(r, 200, json_pack("{s:o, s:I, s:o}", "traces", list, "matched", (json_int_t)n, "stats",
                                         stats_json(t)));
}

static int by_start(const void *a, const void *b)
{
    const struct span_rec *x = *(const struct span_rec *const *)a, *y = *(const struct span_rec *const *)b;
    if (x->start_ns != y->start_ns)
        return x->start_ns < y->start_ns ? -1 : 1;
    return y->end_ns < x->end_ns ? -1 : y->end_ns > x->end_ns ? 1 : 0; /* the enclosing one first */
}

static const char *const kind_text[] = { "unspecified", "internal", "server", "client", "producer", "consumer" };
static const char *const status_text[] = { "unset", "ok", "error" };

static void get_trace(struct service_req *r, void *arg)
{
    struct traces *t = arg;
    if (!admin_authorized(&t->auth, r))
        return;
    struct str p = service_req_param(r, "trace_id");
    char id[33];
    bool is_valid = p.n == 32;
    for (size_t i = 0; is_valid && i < 32; i++) {
        int c = hex_lower(p.p[i]);
        is_valid = c >= 0;
        id[i] = (char)c;
    }
    id[32] = '\0';
    const struct trace_rec *tr = is_valid ? trace_find(t, id) : NULL;
    if (!tr) {
        service_reply_error(r, 404, "not_found",
                            is_valid ? "no such trace (never received, or evicted)" : "a trace id is 32 hex digits");
        return;
    }
    const struct span_rec **order = malloc(tr->nspans * sizeof *order);
    if (!order) {
        service_reply_error(r, 503, "unavailable", "out of memory");
        return;
    }
    for (size_t i = 0; i < tr->nspans; i++)
        order[i] = &tr->spans[i];
    qsort(order, tr->nspans, sizeof *order, by_start);
    json_t *spans = json_array();
    for (size_t i = 0; i < tr->nspans; i++) {
        const struct span_rec *s = order[i];
        json_t *attrs = json_loads(s->attrs, 0, NULL);
        json_t *status = json_pack("{s:s}", "code", status_text[s->status]);
        if (s->status_msg)
            json_object_set_new(status, "message", json_string(s->status_msg));
        json_t *o = json_pack("{s:s, s:o, s:s, s:s, s:s, s:o, s:o, s:f, s:o, s:o}", "span_id", s->span_id,
                              "parent_span_id", s->parent_id[0] ? json_string(s->parent_id) : json_null(), "name",
                              s->name, "service", s->service, "kind", kind_text[s->kind], "start_unix_nano",
                              nanos_json(s->start_ns), "end_unix_nano", nanos_json(s->end_ns), "duration_ms",
                              (double)(s->end_ns - s->start_ns) / 1e6, "attributes",
                              attrs ? attrs : json_object(), "status", status);
        if (s->dropped_attrs)
            json_object_set_new(o, "dropped_attributes", json_integer(s->dropped_attrs));
        json_array_append_new(spans, o);
    }
    free(order);
    service_reply_json(r, 200, json_pack("{s:s, s:o}", "trace_id", tr->id, "spans", spans));
}

int traces_register(struct traces *t, struct service *s, const struct admin_auth *auth)
{
    if (service_workers(s) != 1)
        return -EINVAL;
    t->auth = *auth;
    int rc = service_route(s, "POST", "/v1/traces", post_traces, t);
    if (!rc)
        rc = service_route(s, "GET", "/v1/traces", list_traces, t);
    if (!rc)
        rc = service_route(s, "GET", "/v1/traces/{trace_id}", get_trace, t);
    return rc;
}
