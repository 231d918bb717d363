#include "core/json.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* Keys keep insertion order in jansson >= 2.8 anyway; PRESERVE_ORDER says so. */
#define DUMP_FLAGS (JSON_COMPACT | JSON_ENCODE_ANY | JSON_PRESERVE_ORDER)
/* Only the flags that make jansson stricter: ALLOW_NUL stays off. */
#define PARSE_FLAGS (JSON_REJECT_DUPLICATES | JSON_DECODE_ANY)

int json_reason_status(enum json_reason reason)
{
    switch (reason) {
    case JSON_REASON_NONE:
        return 0;
    case JSON_REASON_SYNTAX:
    case JSON_REASON_DUPLICATE_KEY:
    case JSON_REASON_TOO_DEEP:
    case JSON_REASON_NUMBER_RANGE:
        return 400;
    case JSON_REASON_NOT_OBJECT:
    case JSON_REASON_MISSING:
    case JSON_REASON_TYPE:
    case JSON_REASON_RANGE:
    case JSON_REASON_UNKNOWN_FIELD:
        return 422;
    case JSON_REASON_NOMEM:
        return 503;
    }
    return 500;
}

const char *json_reason_code(enum json_reason reason)
{
    switch (json_reason_status(reason)) {
    case 0:
        return "";
    case 400:
        return "invalid_json";
    case 422:
        return "validation_failed";
    case 503:
        return "unavailable";
    }
    return "internal";
}

/* ---- escaping ----------------------------------------------------------- */

size_t json_utf8_seq_len(const unsigned char *p, size_t n)
{
    unsigned c = p[0];

    if (c < 0x80)
        return 1;
    if (c < 0xC2) /* continuation byte, or an overlong 2-byte lead */
        return 0;
    if (c < 0xE0)
        return n >= 2 && (p[1] & 0xC0) == 0x80 ? 2 : 0;
    if (c < 0xF0) {
        if (n < 3 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80)
            return 0;
        if (c == 0xE0 && p[1] < 0xA0) /* overlong */
            return 0;
        if (c == 0xED && p[1] > 0x9F) /* UTF-16 surrogates */
            return 0;
        return 3;
    }
    if (c < 0xF5) {
        if (n < 4 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80 || (p[3] & 0xC0) != 0x80)
            return 0;
        if (c == 0xF0 && p[1] < 0x90) /* overlong */
            return 0;
        if (c == 0xF4 && p[1] > 0x8F) /* past U+10FFFF */
            return 0;
        return 4;
    }
    return 0;
}

size_t json_escape(char *dst, size_t cap, struct str s, size_t *consumed)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)s.p;
    size_t i = 0, o = 0;

    while (i < s.n) {
        unsigned c = p[i];
        char esc[6];
        const char *out = esc;
        size_t olen, ilen = 1;

        if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
            if (o + 1 > cap)
                break;
            if (dst)
                dst[o] = (char)c;
            o++;
            i++;
            continue;
        }
        olen = 2;
        esc[0] = '\\';
        switch (c) {
        case '"': esc[1] = '"'; break;
        case '\\': esc[1] = '\\'; break;
        case '\n': esc[1] = 'n'; break;
        case '\r': esc[1] = 'r'; break;
        case '\t': esc[1] = 't'; break;
        case '\b': esc[1] = 'b'; break;
        case '\f': esc[1] = 'f'; break;
        default:
            if (c < 0x20) {
                memcpy(esc, "\\u00", 4);
                esc[4] = hex[c >> 4];
                esc[5] = hex[c & 15];
                olen = 6;
            } else if ((ilen = json_utf8_seq_len(p + i, s.n - i)) != 0) {
                out = (const char *)p + i;
                olen = ilen;
            } else {
                out = "\\ufffd";
                olen = 6;
                ilen = 1;
            }
        }
        if (o + olen > cap)
            break;
        if (dst)
            memcpy(dst + o, out, olen);
        o += olen;
        i += ilen;
    }
    if (consumed)
        *consumed = i;
    return o;
}

int json_append_string(struct buf *b, struct str s)
{
    size_t n = json_escape(NULL, SIZE_MAX, s, NULL);
    int rc = buf_reserve(b, n + 2);
    if (rc)
        return rc;
    char *w = buf_wptr(b);
    w[0] = '"';
    json_escape(w + 1, n, s, NULL);
    w[n + 1] = '"';
    buf_commit(b, n + 2);
    return 0;
}

static size_t put(char *w, const char *lit)
{
    size_t n = strlen(lit);
    memcpy(w, lit, n);
    return n;
}

static size_t put_string(char *w, struct str s, size_t escaped_len)
{
    w[0] = '"';
    json_escape(w + 1, escaped_len, s, NULL);
    w[escaped_len + 1] = '"';
    return escaped_len + 2;
}

int json_error_body(struct buf *b, const char *code, const char *message, const char *request_id)
{
    static const char p1[] = "{\"error\":{\"code\":", p2[] = ",\"message\":",
                      p3[] = ",\"request_id\":", p4[] = "}}";
    struct str c = str_from_cstr(code ? code : ""), m = str_from_cstr(message ? message : ""),
               r = str_from_cstr(request_id ? request_id : "");
    size_t cn = json_escape(NULL, SIZE_MAX, c, NULL), mn = json_escape(NULL, SIZE_MAX, m, NULL),
           rn = json_escape(NULL, SIZE_MAX, r, NULL);
    size_t total = sizeof p1 - 1 + sizeof p2 - 1 + sizeof p3 - 1 + sizeof p4 - 1 + cn + mn + rn + 6;

    /* One reservation, then plain stores: the buffer gets all of it or nothing. */
    int rc = buf_reserve(b, total);
    if (rc)
        return rc;
    char *w = buf_wptr(b);
    size_t o = put(w, p1);
    o += put_string(w + o, c, cn);
    o += put(w + o, p2);
    o += put_string(w + o, m, mn);
    o += put(w + o, p3);
    o += put_string(w + o, r, rn);
    o += put(w + o, p4);
    buf_commit(b, o);
    return 0;
}

int json_dump_to_buf(const json_t *v, struct buf *b)
{
    if (!v)
        return -EINVAL;
    size_t need = json_dumpb(v, NULL, 0, DUMP_FLAGS);
    if (need == 0)
        return -EINVAL;
    int rc = buf_reserve(b, need);
    if (rc)
        return rc;
    if (json_dumpb(v, buf_wptr(b), need, DUMP_FLAGS) != need)
        return -EINVAL;
    buf_commit(b, need);
    return 0;
}

/* ---- parsing ------------------------------------------------------------ */

static void err_clear(struct json_error *err)
{
    if (!err)
        return;
    err->reason = JSON_REASON_NONE;
    err->line = err->column = 0;
    err->position = 0;
    err->field[0] = '\0';
    err->message[0] = '\0';
}

/* Finds the first byte where array/object nesting exceeds max, outside
 * strings. jansson would build the whole tree (up to its own 2048 levels)
 * before we could look at it; this pass costs one read of the body. */
static bool depth_exceeded(struct str body, size_t max, size_t *pos)
{
    size_t depth = 0;
    bool in_string = false;

    for (size_t i = 0; i < body.n; i++) {
        char c = body.p[i];
        if (in_string) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_string = false;
            continue;
        }
        if (c == '"') {
            in_string = true;
        } else if (c == '[' || c == '{') {
            if (++depth > max) {
                *pos = i;
                return true;
            }
        } else if ((c == ']' || c == '}') && depth) {
            depth--;
        }
    }
    return false;
}

/* Line and character column (1-based) of byte pos, counted as jansson does. */
static void locate(struct str body, size_t pos, int *line, int *column)
{
    int l = 1, c = 0;
    for (size_t i = 0; i <= pos && i < body.n; i++) {
        unsigned char ch = (unsigned char)body.p[i];
        if (ch == '\n') {
            l++;
            c = 0;
        } else if ((ch & 0xC0) != 0x80) {
            c++;
        }
    }
    *line = l;
    *column = c;
}

static bool is_blank(struct str s)
{
    for (size_t i = 0; i < s.n; i++)
        if (s.p[i] != ' ' && s.p[i] != '\t' && s.p[i] != '\n' && s.p[i] != '\r')
            return false;
    return true;
}

/* jansson texts end in " near '<token>'": split that off. */
static void split_near(const char *text, char *detail, size_t dsz, char *near, size_t nsz)
{
    const char *n = strstr(text, " near '");
    size_t dl = n ? (size_t)(n - text) : strlen(text);
    snprintf(detail, dsz, "%.*s", (int)dl, text);
    near[0] = '\0';
    if (n) {
        const char *tok = n + 7;
        size_t tl = strlen(tok);
        if (tl && tok[tl - 1] == '\'')
            tl--;
        snprintf(near, nsz, "%.*s", (int)tl, tok);
    }
}

int json_parse_body(struct str body, size_t max_depth, json_t **out, struct json_error *err)
{
    json_error_t je;
    char detail[JSON_ERROR_TEXT_LENGTH], near[JSON_ERROR_TEXT_LENGTH], what[200];
    enum json_reason reason = JSON_REASON_SYNTAX;
    size_t pos;
    int rc = -EINVAL;

    *out = NULL;
    err_clear(err);
    if (max_depth == 0)
        max_depth = JSON_BODY_DEFAULT_DEPTH;
    if (max_depth > JSON_BODY_MAX_DEPTH)
        max_depth = JSON_BODY_MAX_DEPTH;
    if (!body.p || is_blank(body)) {
        if (err) {
            err->reason = JSON_REASON_SYNTAX;
            snprintf(err->message, sizeof err->message, "empty body");
        }
        return -EINVAL;
    }
    if (depth_exceeded(body, max_depth, &pos)) {
        if (err) {
            err->reason = JSON_REASON_TOO_DEEP;
            err->position = pos;
            locate(body, pos, &err->line, &err->column);
            snprintf(err->message, sizeof err->message,
                     "nesting deeper than %zu levels at line %d, column %d", max_depth, err->line,
                     err->column);
        }
        return -EINVAL;
    }
    *out = json_loadb(body.p, body.n, PARSE_FLAGS, &je);
    if (*out)
        return 0;
    if (!err)
        return json_error_code(&je) == json_error_out_of_memory ? -ENOMEM : -EINVAL;

    split_near(je.text, detail, sizeof detail, near, sizeof near);
    switch (json_error_code(&je)) {
    case json_error_out_of_memory:
        reason = JSON_REASON_NOMEM;
        rc = -ENOMEM;
        snprintf(what, sizeof what, "out of memory");
        break;
    case json_error_stack_overflow:
        reason = JSON_REASON_TOO_DEEP;
        snprintf(what, sizeof what, "nesting too deep");
        break;
    case json_error_duplicate_key:
        reason = JSON_REASON_DUPLICATE_KEY;
        snprintf(what, sizeof what, "duplicate object key %.100s", near);
        break;
    case json_error_numeric_overflow:
        reason = JSON_REASON_NUMBER_RANGE;
        if (strncmp(detail, "too big integer", 15) == 0)
            snprintf(what, sizeof what, "integer %.40s does not fit in 64 bits", near);
        else
            snprintf(what, sizeof what, "number %.40s is out of range", near);
        break;
    case json_error_invalid_utf8:
        snprintf(what, sizeof what, "invalid UTF-8 (%.100s)", detail);
        break;
    case json_error_null_character:
        snprintf(what, sizeof what, "\\u0000 is not allowed in strings");
        break;
    case json_error_end_of_input_expected:
        snprintf(what, sizeof what, "unexpected data after the JSON value");
        break;
    case json_error_premature_end_of_input:
        snprintf(what, sizeof what, "unexpected end of input");
        break;
    default:
        if (strcmp(detail, "control character 0x0") == 0)
            snprintf(what, sizeof what, "NUL byte in a string");
        else if (near[0])
            snprintf(what, sizeof what, "%.100s near '%.60s'", detail, near);
        else
            snprintf(what, sizeof what, "%.150s", detail);
        break;
    }
    err->reason = reason;
    err->line = je.line;
    err->column = je.column;
    err->position = je.position > 0 ? (size_t)je.position : 0;
    snprintf(err->message, sizeof err->message, "%s at line %d, column %d", what, je.line,
             je.column);
    return rc;
}

/* ---- validation --------------------------------------------------------- */

static int fail(struct json_error *err, enum json_reason reason, const char *key, const char *fmt,
                ...) __attribute__((format(printf, 4, 5)));

static int fail(struct json_error *err, enum json_reason reason, const char *key, const char *fmt,
                ...)
{
    if (!err)
        return -EINVAL;
    char rest[140];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(rest, sizeof rest, fmt, ap);
    va_end(ap);
    err_clear(err);
    err->reason = reason;
    if (key) {
        snprintf(err->field, sizeof err->field, "%s", key);
        snprintf(err->message, sizeof err->message, "\"%.100s\" %s", key, rest);
    } else {
        snprintf(err->message, sizeof err->message, "%s", rest);
    }
    return -EINVAL;
}

/* 1: found (not null); 0: optional and absent; -EINVAL: error reported. */
static int lookup(const json_t *obj, const char *key, bool required, json_t **v,
                  struct json_error *err)
{
    if (!json_is_object(obj))
        return fail(err, JSON_REASON_NOT_OBJECT, NULL, "request body must be a JSON object");
    *v = json_object_get(obj, key);
    if (*v && !json_is_null(*v))
        return 1;
    if (required)
        return fail(err, JSON_REASON_MISSING, key, "is required");
    return 0;
}

static size_t utf8_chars(const char *s, size_t n)
{
    size_t count = 0;
    for (size_t i = 0; i < n; i++)
        count += ((unsigned char)s[i] & 0xC0) != 0x80;
    return count;
}

int json_get_string(const json_t *obj, const char *key, bool required, size_t min_len,
                    size_t max_len, const char **out, struct json_error *err)
{
    json_t *v = NULL;
    int rc = lookup(obj, key, required, &v, err);
    if (rc <= 0)
        return rc;
    if (!json_is_string(v))
        return fail(err, JSON_REASON_TYPE, key, "must be a string");
    const char *s = json_string_value(v);
    size_t bytes = json_string_length(v);
    if (memchr(s, '\0', bytes))
        return fail(err, JSON_REASON_TYPE, key, "must not contain NUL characters");
    size_t chars = utf8_chars(s, bytes);
    if (chars < min_len)
        return fail(err, JSON_REASON_RANGE, key, "must be at least %zu character%s", min_len,
                    min_len == 1 ? "" : "s");
    if (chars > max_len)
        return fail(err, JSON_REASON_RANGE, key, "must be at most %zu character%s", max_len,
                    max_len == 1 ? "" : "s");
    *out = s;
    return 0;
}

int json_get_int(const json_t *obj, const char *key, bool required, json_int_t min,
                 json_int_t max, json_int_t *out, struct json_error *err)
{
    json_t *v = NULL;
    int rc = lookup(obj, key, required, &v, err);
    if (rc <= 0)
        return rc;
    if (!json_is_integer(v))
        return fail(err, JSON_REASON_TYPE, key, "must be an integer");
    json_int_t x = json_integer_value(v);
    if (x < min || x > max) {
        if (min == INT64_MIN)
            return fail(err, JSON_REASON_RANGE, key, "must be at most %" PRId64, (int64_t)max);
        if (max == INT64_MAX)
            return fail(err, JSON_REASON_RANGE, key, "must be at least %" PRId64, (int64_t)min);
        return fail(err, JSON_REASON_RANGE, key, "must be between %" PRId64 " and %" PRId64,
                    (int64_t)min, (int64_t)max);
    }
    *out = x;
    return 0;
}

int json_get_bool(const json_t *obj, const char *key, bool required, bool *out,
                  struct json_error *err)
{
    json_t *v = NULL;
    int rc = lookup(obj, key, required, &v, err);
    if (rc <= 0)
        return rc;
    if (!json_is_boolean(v))
        return fail(err, JSON_REASON_TYPE, key, "must be true or false");
    *out = json_is_true(v);
    return 0;
}

int json_get_object(const json_t *obj, const char *key, bool required, json_t **out,
                    struct json_error *err)
{
    json_t *v = NULL;
    int rc = lookup(obj, key, required, &v, err);
    if (rc <= 0)
        return rc;
    if (!json_is_object(v))
        return fail(err, JSON_REASON_TYPE, key, "must be an object");
    *out = v;
    return 0;
}

int json_get_array(const json_t *obj, const char *key, bool required, size_t min_items,
                   size_t max_items, json_t **out, struct json_error *err)
{
    json_t *v = NULL;
    int rc = lookup(obj, key, required, &v, err);
    if (rc <= 0)
        return rc;
    if (!json_is_array(v))
        return fail(err, JSON_REASON_TYPE, key, "must be an array");
    size_t n = json_array_size(v);
    if (n < min_items)
        return fail(err, JSON_REASON_RANGE, key, "must have at least %zu item%s", min_items,
                    min_items == 1 ? "" : "s");
    if (n > max_items)
        return fail(err, JSON_REASON_RANGE, key, "must have at most %zu item%s", max_items,
                    max_items == 1 ? "" : "s");
    *out = v;
    return 0;
}

int json_check_only_keys(const json_t *obj, const char *const *allowed, struct json_error *err)
{
    if (!json_is_object(obj))
        return fail(err, JSON_REASON_NOT_OBJECT, NULL, "request body must be a JSON object");
    /* jansson's iterators take non-const objects but do not modify them. */
    json_t *o = (json_t *)obj;
    for (void *it = json_object_iter(o); it; it = json_object_iter_next(o, it)) {
        const char *key = json_object_iter_key(it);
        size_t klen = json_object_iter_key_len(it);
        bool known = false;
        for (const char *const *a = allowed; *a && !known; a++)
            known = strlen(*a) == klen && memcmp(*a, key, klen) == 0;
        if (known)
            continue;
        /* The key comes from the client: cut and escape it before it goes
         * into a message that may be logged or echoed. 64 bytes name any
         * honest field; 120 escaped bytes keep the message under 256. */
        char shown[128];
        size_t used;
        size_t cut = klen < 64 ? klen : 64;
        while (cut < klen && cut > 0 && ((unsigned char)key[cut] & 0xC0) == 0x80)
            cut--; /* not inside a UTF-8 sequence */
        size_t n = json_escape(shown, 120, str_make(key, cut), &used);
        if (used < klen)
            n += (size_t)snprintf(shown + n, sizeof shown - n, "...");
        shown[n] = '\0';
        fail(err, JSON_REASON_UNKNOWN_FIELD, NULL, "unknown field \"%s\"", shown);
        if (err)
            snprintf(err->field, sizeof err->field, "%s", shown);
        return -EINVAL;
    }
    return 0;
}
