/* trace.c — W3C Trace Context and spans; the OTLP/JSON encoding of a span.
 * The tracer (queue, batches, export) is in trace_export.c. */
#include "core/trace.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/json.h"
#include "core/log.h"
#include "core/rand.h"

/* ---- W3C Trace Context ----------------------------------------------------- */

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1; /* upper case included: W3C requires lowercase */
}

/* n lowercase hex digits, not all '0'. */
static bool is_hex_id(const char *p, size_t n)
{
    bool is_nonzero = false;
    for (size_t i = 0; i < n; i++) {
        if (hex_value(p[i]) < 0)
            return false;
        is_nonzero |= p[i] != '0';
    }
    return is_nonzero;
}

int trace_parse_traceparent(struct str h, struct trace_ctx *out)
{
    if (!h.p || h.n < TRACE_TRACEPARENT_LEN)
        return -EINVAL;
    const char *p = h.p;
    int v_hi = hex_value(p[0]), v_lo = hex_value(p[1]);
    if (v_hi < 0 || v_lo < 0 || p[2] != '-')
        return -EINVAL;
    int version = v_hi * 16 + v_lo;
    if (version == 0xff)
        return -EINVAL;
    /* Version 00 is exactly 55 bytes. A later version may append fields
     * after another '-': parse what version 00 defines, ignore the rest. */
    if (version == 0 && h.n != TRACE_TRACEPARENT_LEN)
        return -EINVAL;
    if (h.n > TRACE_TRACEPARENT_LEN && p[TRACE_TRACEPARENT_LEN] != '-')
        return -EINVAL;
    if (p[35] != '-' || p[52] != '-')
        return -EINVAL;
    if (!is_hex_id(p + 3, 32) || !is_hex_id(p + 36, 16))
        return -EINVAL;
    int f_hi = hex_value(p[53]), f_lo = hex_value(p[54]);
    if (f_hi < 0 || f_lo < 0)
        return -EINVAL;
    memcpy(out->trace_id, p + 3, 32);
    out->trace_id[32] = '\0';
    memcpy(out->span_id, p + 36, 16);
    out->span_id[16] = '\0';
    out->flags = (uint8_t)(f_hi * 16 + f_lo);
    return 0;
}

bool trace_ctx_is_valid(const struct trace_ctx *ctx)
{
    return ctx && is_hex_id(ctx->trace_id, 32) && ctx->trace_id[32] == '\0' && is_hex_id(ctx->span_id, 16) &&
           ctx->span_id[16] == '\0';
}

int trace_format_traceparent(const struct trace_ctx *ctx, char out[TRACE_TRACEPARENT_LEN + 1])
{
    static const char hex[] = "0123456789abcdef";
    if (!trace_ctx_is_valid(ctx)) {
        out[0] = '\0';
        return -EINVAL;
    }
    memcpy(out, "00-", 3);
    memcpy(out + 3, ctx->trace_id, 32);
    out[35] = '-';
    memcpy(out + 36, ctx->span_id, 16);
    out[52] = '-';
    out[53] = hex[ctx->flags >> 4];
    out[54] = hex[ctx->flags & 15];
    out[55] = '\0';
    return 0;
}

struct str trace_tracestate_bound(struct str h)
{
    h = str_trim_ows(h);
    if (h.n <= TRACE_TRACESTATE_MAX)
        return h;
    /* The members before a comma at i ≤ 512 fit in i bytes. */
    size_t i = TRACE_TRACESTATE_MAX;
    while (i > 0 && h.p[i] != ',')
        i--;
    while (i > 0 && (h.p[i - 1] == ',' || h.p[i - 1] == ' ' || h.p[i - 1] == '\t'))
        i--;
    return str_make(h.p, i);
}

bool trace_sample_ratio(const char *trace_id, double ratio)
{
    if (!(ratio > 0))
        return false;
    if (ratio >= 1)
        return true;
    /* The last 7 bytes: W3C level 2 requires them random; ours are. */
    uint64_t v = 0;
    for (int i = 18; i < 32; i++) {
        int d = hex_value(trace_id[i]);
        if (d < 0)
            return false;
        v = v << 4 | (uint64_t)d;
    }
    return v < (uint64_t)(ratio * 72057594037927936.0); /* 2^56 */
}

/* ---- spans ----------------------------------------------------------------- */

enum attr_type { ATTR_STR, ATTR_INT, ATTR_DOUBLE, ATTR_BOOL };

struct attr {
    char *mem;    /* key, NUL, and for strings the value and NUL: one allocation */
    size_t klen;
    size_t slen;
    enum attr_type type;
    union {
        int64_t i;
        double d;
        bool b;
    } v;
};

struct trace_span {
    struct trace_tracer *tracer;
    struct trace_ctx ctx;
    char parent_id[17];
    bool is_recording;
    enum trace_span_kind kind;
    enum trace_status status;
    uint64_t start_ns, end_ns;
    struct attr *attrs; /* grows 8 → TRACE_MAX_ATTRS: most spans carry a handful */
    uint32_t nattrs, cap_attrs;
    uint32_t dropped_attrs;
    char *status_msg;
    size_t status_len;
    char *tracestate;
    size_t tracestate_len;
    size_t name_len;
    char name[TRACE_MAX_NAME + 1];
};

static _Thread_local struct trace_span *t_current;

/* The longest prefix of s of at most max bytes that does not split a UTF-8
 * sequence (a valid sequence has at most 3 continuation bytes). */
static struct str cut_utf8(struct str s, size_t max)
{
    if (s.n <= max)
        return s;
    size_t n = max;
    for (int k = 0; k < 3 && n > 0 && ((unsigned char)s.p[n] & 0xc0) == 0x80; k++)
        n--;
    return str_make(s.p, n);
}

struct trace_span *trace_span_start(struct trace_tracer *tracer, const char *name, enum trace_span_kind kind,
                                    const struct trace_ctx *parent)
{
    struct trace_span *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->tracer = tracer;
    s->kind = (kind >= TRACE_SPAN_INTERNAL && kind <= TRACE_SPAN_CONSUMER) ? kind : TRACE_SPAN_INTERNAL;
    bool is_sampled;
    if (parent && trace_ctx_is_valid(parent)) {
        memcpy(s->ctx.trace_id, parent->trace_id, sizeof s->ctx.trace_id);
        memcpy(s->parent_id, parent->span_id, sizeof s->parent_id);
        is_sampled = parent->flags & TRACE_FLAG_SAMPLED;
    } else {
        rand_hex(s->ctx.trace_id, 16);
        is_sampled = trace_tracer_samples_root(tracer, s->ctx.trace_id);
    }
    rand_hex(s->ctx.span_id, 8);
    s->ctx.flags = is_sampled ? TRACE_FLAG_SAMPLED : 0;
    s->is_recording = is_sampled && trace_tracer_is_enabled(tracer);
    if (s->is_recording) {
        struct str n = cut_utf8(str_from_cstr(name), TRACE_MAX_NAME);
        memcpy(s->name, n.p, n.n);
        s->name_len = n.n;
        s->start_ns = loop_wall_ns();
    }
    return s;
}

static void span_free(struct trace_span *s)
{
    for (uint32_t i = 0; i < s->nattrs; i++)
        free(s->attrs[i].mem);
    free(s->attrs);
    free(s->status_msg);
    free(s->tracestate);
    free(s);
}

void trace_span_end(struct trace_span *s)
{
    if (!s)
        return;
    if (t_current == s)
        trace_clear_current();
    if (s->is_recording) {
        s->end_ns = loop_wall_ns();
        trace_tracer_submit(s->tracer, s);
    }
    span_free(s);
}

/* Sets key to val (type and v; sval for strings). */
static int attr_set(struct trace_span *s, const char *key, enum attr_type type, struct str sval, const struct attr *val)
{
    if (!s || !s->is_recording)
        return 0;
    if (!key)
        return -EINVAL;
    size_t klen = strnlen(key, TRACE_MAX_KEY + 1);
    if (klen == 0 || klen > TRACE_MAX_KEY)
        return -EINVAL;
    struct attr *a = NULL;
    for (uint32_t i = 0; i < s->nattrs && !a; i++)
        if (s->attrs[i].klen == klen && memcmp(s->attrs[i].mem, key, klen) == 0)
            a = &s->attrs[i];
    bool is_new = !a;
    if (is_new) {
        if (s->nattrs == TRACE_MAX_ATTRS) {
            s->dropped_attrs++;
            return -ENOSPC;
        }
        if (s->nattrs == s->cap_attrs) {
            uint32_t cap = s->cap_attrs ? TRACE_MAX_ATTRS : 8;
            struct attr *p = realloc(s->attrs, cap * sizeof *p);
            if (!p)
                return -ENOMEM;
            s->attrs = p;
            s->cap_attrs = cap;
        }
        a = &s->attrs[s->nattrs];
    }
    if (type == ATTR_STR)
        sval = cut_utf8(sval, TRACE_MAX_VALUE);
    size_t slen = type == ATTR_STR ? sval.n : 0;
    char *mem = realloc(is_new ? NULL : a->mem, klen + 1 + slen + 1);
    if (!mem)
        return -ENOMEM; /* an existing value stays as it was */
    if (is_new) {
        memcpy(mem, key, klen);
        mem[klen] = '\0';
        s->nattrs++;
    }
    if (slen)
        memcpy(mem + klen + 1, sval.p, slen);
    mem[klen + 1 + slen] = '\0';
    a->mem = mem;
    a->klen = klen;
    a->slen = slen;
    a->type = type;
    a->v = val->v;
    return 0;
}

int trace_span_set_attr_str(struct trace_span *s, const char *key, struct str value)
{
    struct attr v = { 0 };
    if (!value.p)
        value = STR_LIT("");
    return attr_set(s, key, ATTR_STR, value, &v);
}

int trace_span_set_attr_int(struct trace_span *s, const char *key, int64_t value)
{
    struct attr v = { .v.i = value };
    return attr_set(s, key, ATTR_INT, STR_NULL, &v);
}

int trace_span_set_attr_double(struct trace_span *s, const char *key, double value)
{
    struct attr v = { .v.d = value };
    return attr_set(s, key, ATTR_DOUBLE, STR_NULL, &v);
}

int trace_span_set_attr_bool(struct trace_span *s, const char *key, bool value)
{
    struct attr v = { .v.b = value };
    return attr_set(s, key, ATTR_BOOL, STR_NULL, &v);
}

/* Replaces *dst (length *dlen) with a copy of v, NULL when v is empty. */
static int replace_copy(char **dst, size_t *dlen, struct str v)
{
    free(*dst);
    *dst = NULL;
    *dlen = 0;
    if (!v.n)
        return 0;
    char *p = malloc(v.n + 1);
    if (!p)
        return -ENOMEM;
    memcpy(p, v.p, v.n);
    p[v.n] = '\0';
    *dst = p;
    *dlen = v.n;
    return 0;
}

int trace_span_set_status(struct trace_span *s, enum trace_status code, struct str message)
{
    if (!s || !s->is_recording || code == TRACE_STATUS_UNSET || s->status == TRACE_STATUS_OK)
        return 0;
    if (code != TRACE_STATUS_OK && code != TRACE_STATUS_ERROR)
        return -EINVAL;
    s->status = code;
    if (code != TRACE_STATUS_ERROR || !message.p)
        message = STR_NULL;
    return replace_copy(&s->status_msg, &s->status_len, cut_utf8(message, TRACE_MAX_VALUE));
}

int trace_span_set_tracestate(struct trace_span *s, struct str tracestate)
{
    if (!s)
        return 0;
    if (!tracestate.p)
        tracestate = STR_NULL;
    return replace_copy(&s->tracestate, &s->tracestate_len, trace_tracestate_bound(tracestate));
}

struct str trace_span_tracestate(const struct trace_span *s)
{
    if (!s || !s->tracestate)
        return STR_LIT("");
    return str_make(s->tracestate, s->tracestate_len);
}

const struct trace_ctx *trace_span_ctx(const struct trace_span *s) { return s ? &s->ctx : NULL; }
const char *trace_span_parent_id(const struct trace_span *s) { return s ? s->parent_id : ""; }
bool trace_span_is_recording(const struct trace_span *s) { return s && s->is_recording; }

/* ---- OTLP/JSON ------------------------------------------------------------- */

/* A JSON writer that keeps the first error, so encoders read as a list of
 * fields rather than a ladder of ifs. */
struct jw {
    struct buf *b;
    int err;
};

static void jw_raw(struct jw *w, const char *p, size_t n)
{
    if (!w->err)
        w->err = buf_append(w->b, p, n);
}
#define JW_LIT(w, s) jw_raw((w), (s), sizeof(s) - 1)

static void jw_str(struct jw *w, struct str s)
{
    if (!w->err)
        w->err = json_append_string(w->b, s);
}

static void jw_u64(struct jw *w, uint64_t v)
{
    if (!w->err)
        w->err = buf_append_u64(w->b, v);
}

/* Shortest form that reads back the same; proto3 JSON spells the
 * non-finite values as strings. */
static void jw_double(struct jw *w, double d)
{
    if (isnan(d)) {
        JW_LIT(w, "\"NaN\"");
        return;
    }
    if (isinf(d)) {
        if (d > 0)
            JW_LIT(w, "\"Infinity\"");
        else
            JW_LIT(w, "\"-Infinity\"");
        return;
    }
    char tmp[32];
    int n = snprintf(tmp, sizeof tmp, "%.15g", d);
    if (strtod(tmp, NULL) != d)
        n = snprintf(tmp, sizeof tmp, "%.17g", d);
    jw_raw(w, tmp, (size_t)n);
}

static void jw_attr(struct jw *w, const struct attr *a)
{
    JW_LIT(w, "{\"key\":");
    jw_str(w, str_make(a->mem, a->klen));
    switch (a->type) {
    case ATTR_STR:
        JW_LIT(w, ",\"value\":{\"stringValue\":");
        jw_str(w, str_make(a->mem + a->klen + 1, a->slen));
        break;
    case ATTR_INT: {
        /* int64 is a decimal string in proto3 JSON. */
        char tmp[24];
        int n = snprintf(tmp, sizeof tmp, "\"%" PRId64 "\"", a->v.i);
        JW_LIT(w, ",\"value\":{\"intValue\":");
        jw_raw(w, tmp, (size_t)n);
        break;
    }
    case ATTR_DOUBLE:
        JW_LIT(w, ",\"value\":{\"doubleValue\":");
        jw_double(w, a->v.d);
        break;
    case ATTR_BOOL:
        JW_LIT(w, ",\"value\":{\"boolValue\":");
        if (a->v.b)
            JW_LIT(w, "true");
        else
            JW_LIT(w, "false");
        break;
    }
    JW_LIT(w, "}}");
}

int trace_span_to_json(const struct trace_span *s, struct buf *out)
{
    size_t len0 = buf_len(out);
    struct jw w = { out, 0 };
    JW_LIT(&w, "{\"traceId\":\"");
    jw_raw(&w, s->ctx.trace_id, 32);
    JW_LIT(&w, "\",\"spanId\":\"");
    jw_raw(&w, s->ctx.span_id, 16);
    JW_LIT(&w, "\"");
    if (s->parent_id[0]) {
        JW_LIT(&w, ",\"parentSpanId\":\"");
        jw_raw(&w, s->parent_id, 16);
        JW_LIT(&w, "\"");
    }
    if (s->tracestate) {
        JW_LIT(&w, ",\"traceState\":");
        jw_str(&w, str_make(s->tracestate, s->tracestate_len));
    }
    /* Span.flags: the W3C trace flags in bits 0-7. */
    JW_LIT(&w, ",\"flags\":");
    jw_u64(&w, s->ctx.flags);
    JW_LIT(&w, ",\"name\":");
    jw_str(&w, str_make(s->name, s->name_len));
    JW_LIT(&w, ",\"kind\":");
    jw_u64(&w, (uint64_t)s->kind);
    /* fixed64 is a decimal string in proto3 JSON. */
    JW_LIT(&w, ",\"startTimeUnixNano\":\"");
    jw_u64(&w, s->start_ns);
    JW_LIT(&w, "\",\"endTimeUnixNano\":\"");
    jw_u64(&w, s->end_ns);
    JW_LIT(&w, "\",\"attributes\":[");
    for (uint32_t i = 0; i < s->nattrs; i++) {
        if (i)
            JW_LIT(&w, ",");
        jw_attr(&w, &s->attrs[i]);
    }
    JW_LIT(&w, "]");
    if (s->dropped_attrs) {
        JW_LIT(&w, ",\"droppedAttributesCount\":");
        jw_u64(&w, s->dropped_attrs);
    }
    JW_LIT(&w, ",\"status\":{\"code\":");
    jw_u64(&w, (uint64_t)s->status);
    if (s->status_msg) {
        JW_LIT(&w, ",\"message\":");
        jw_str(&w, str_make(s->status_msg, s->status_len));
    }
    JW_LIT(&w, "}}");
    if (w.err)
        out->wpos = out->rpos + len0; /* all or nothing */
    return w.err;
}

/* ---- log correlation ------------------------------------------------------- */

void trace_span_make_current(struct trace_span *s)
{
    if (!s) {
        trace_clear_current();
        return;
    }
    t_current = s;
    log_set_trace(s->ctx.trace_id, s->ctx.span_id);
}

void trace_clear_current(void)
{
    t_current = NULL;
    log_clear_trace();
}

struct trace_span *trace_current_span(void) { return t_current; }
