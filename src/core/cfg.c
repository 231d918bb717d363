#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memmem */
#endif
#include "core/cfg.h"
#include "core/cfg_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

#include "core/arena.h"
#include "core/json.h"

/* ---- errors ------------------------------------------------------------ */

static void err_vset(struct cfg_error *err, const char *file, int line, int column,
                     const char *field, const char *fmt, va_list ap)
{
    if (!err)
        return;
    snprintf(err->file, sizeof err->file, "%s", file ? file : "");
    err->line = line;
    err->column = column;
    snprintf(err->field, sizeof err->field, "%s", field ? field : "");
    vsnprintf(err->message, sizeof err->message, fmt, ap);
}

int cfg_err_at(struct cfg_error *err, const char *file, int line, int column, const char *field,
                  const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    err_vset(err, file, line, column, field, fmt, ap);
    va_end(ap);
    return -EINVAL;
}

/* An error about node n: its location, its path as the field. */
int cfg_err_node(struct cfg_error *err, const struct cfg_node *n, const char *fmt, ...)
{
    if (!err)
        return -EINVAL;
    char path[sizeof err->field];
    cfg_path(n, path, sizeof path);
    va_list ap;
    va_start(ap, fmt);
    err_vset(err, n->file, n->line, n->column, path, fmt, ap);
    va_end(ap);
    return -EINVAL;
}

int cfg_error_format(const struct cfg_error *err, char *buf, size_t size)
{
    char loc[32] = "";
    if (err->line > 0 && err->column > 0)
        snprintf(loc, sizeof loc, ":%d:%d", err->line, err->column);
    else if (err->line > 0)
        snprintf(loc, sizeof loc, ":%d", err->line);
    return snprintf(buf, size, "%s%s: %s%s%s", err->file[0] ? err->file : "<input>", loc,
                    err->field, err->field[0] ? ": " : "", err->message);
}

/* ---- walking ----------------------------------------------------------- */

enum cfg_kind cfg_kind(const struct cfg_node *n) { return n ? n->kind : CFG_NULL; }

const char *cfg_kind_name(enum cfg_kind kind)
{
    switch (kind) {
    case CFG_NULL: return "null";
    case CFG_SCALAR: return "scalar";
    case CFG_MAP: return "mapping";
    case CFG_SEQ: return "sequence";
    }
    return "?";
}

size_t cfg_count(const struct cfg_node *n)
{
    return n && (n->kind == CFG_MAP || n->kind == CFG_SEQ) ? n->n : 0;
}

const struct cfg_node *cfg_map_key(const struct cfg_node *n, size_t i)
{
    return n && n->kind == CFG_MAP && i < n->n ? n->kids[2 * i] : NULL;
}

const struct cfg_node *cfg_map_value(const struct cfg_node *n, size_t i)
{
    return n && n->kind == CFG_MAP && i < n->n ? n->kids[2 * i + 1] : NULL;
}

const struct cfg_node *cfg_seq_item(const struct cfg_node *n, size_t i)
{
    return n && n->kind == CFG_SEQ && i < n->n ? n->kids[i] : NULL;
}

struct str cfg_scalar(const struct cfg_node *n)
{
    if (!n || (n->kind != CFG_SCALAR && n->kind != CFG_NULL))
        return STR_NULL;
    return str_make(n->text, n->len);
}

bool cfg_is_quoted(const struct cfg_node *n) { return n && n->is_quoted; }
const char *cfg_file(const struct cfg_node *n) { return n ? n->file : NULL; }
int cfg_line(const struct cfg_node *n) { return n ? n->line : 0; }
int cfg_column(const struct cfg_node *n) { return n ? n->column : 0; }

size_t cfg_path(const struct cfg_node *n, char *buf, size_t size)
{
    /* Env overrides can add at most CFG_MAX_DEPTH levels under a file's. */
    const struct cfg_node *chain[2 * CFG_MAX_DEPTH + 2];
    size_t depth = 0, len = 0;

    if (size)
        buf[0] = '\0';
    for (const struct cfg_node *p = n; p && p->parent && depth < sizeof chain / sizeof *chain;
         p = p->parent)
        chain[depth++] = p;
    for (size_t i = depth; i-- > 0;) {
        const struct cfg_node *p = chain[i];
        char seg[96];
        size_t sn;
        if (p->parent->kind == CFG_SEQ) {
            sn = (size_t)snprintf(seg, sizeof seg, "[%zu]", p->index);
        } else {
            size_t used, at = 0;
            if (len)
                seg[at++] = '.';
            /* Keys are escaped so that a newline in a key cannot forge a line. */
            at += json_escape(seg + at, sizeof seg - at - 4, str_make(p->name->text, p->name->len),
                              &used);
            if (used < p->name->len)
                at += (size_t)snprintf(seg + at, sizeof seg - at, "...");
            sn = at;
        }
        if (size && len < size - 1)
            memcpy(buf + len, seg, sn < size - 1 - len ? sn : size - 1 - len);
        len += sn;
    }
    if (size)
        buf[len < size ? len : size - 1] = '\0';
    return len;
}

static const struct cfg_node *map_get_n(const struct cfg_node *n, const char *key, size_t kl)
{
    for (size_t i = 0; i < n->n; i++) {
        const struct cfg_node *k = n->kids[2 * i];
        if (k->len == kl && memcmp(k->text, key, kl) == 0)
            return n->kids[2 * i + 1];
    }
    return NULL;
}

const struct cfg_node *cfg_map_get(const struct cfg_node *n, const char *key)
{
    if (!n || n->kind != CFG_MAP || !key)
        return NULL;
    return map_get_n(n, key, strlen(key));
}

/* "a mapping", "a sequence", "null": for "expected X, got <this>". */
static const char *kind_phrase(const struct cfg_node *n)
{
    switch (n->kind) {
    case CFG_MAP: return "a mapping";
    case CFG_SEQ: return "a sequence";
    case CFG_NULL: return "null";
    case CFG_SCALAR: return "a scalar";
    }
    return "?";
}

/* Walks path from n. Returns the node, or NULL with *last the deepest node
 * reached; *wanted is CFG_MAP or CFG_SEQ when the walk stopped because
 * *last is not what the next step needs (CFG_NULL when a key or index was
 * simply missing), and *bad_path is set when path is malformed. */
static const struct cfg_node *walk(const struct cfg_node *n, const char *path,
                                   const struct cfg_node **last, enum cfg_kind *wanted,
                                   bool *bad_path)
{
    const char *p = path;
    *wanted = CFG_NULL;
    *bad_path = false;
    *last = n;
    if (!n || !path)
        return NULL;
    while (*p) {
        size_t kl = strcspn(p, ".[");
        if (kl) {
            if (n->kind != CFG_MAP) {
                *wanted = CFG_MAP;
                return NULL;
            }
            const struct cfg_node *next = map_get_n(n, p, kl);
            if (!next)
                return NULL;
            n = next;
            *last = n;
            p += kl;
        } else if (*p != '[') {
            *bad_path = true;
            return NULL;
        }
        while (*p == '[') {
            char *end;
            if (p[1] < '0' || p[1] > '9') {
                *bad_path = true;
                return NULL;
            }
            errno = 0;
            unsigned long long idx = strtoull(p + 1, &end, 10);
            if (*end != ']' || errno) {
                *bad_path = true;
                return NULL;
            }
            if (n->kind != CFG_SEQ) {
                *wanted = CFG_SEQ;
                return NULL;
            }
            if (idx >= n->n)
                return NULL;
            n = n->kids[idx];
            *last = n;
            p = end + 1;
        }
        if (*p == '.') {
            p++;
            if (!*p || *p == '.' || *p == '[') {
                *bad_path = true;
                return NULL;
            }
        } else if (*p) {
            *bad_path = true;
            return NULL;
        }
    }
    return n;
}

const struct cfg_node *cfg_get(const struct cfg_node *n, const char *path)
{
    const struct cfg_node *last;
    enum cfg_kind wanted;
    bool bad_path;
    return walk(n, path, &last, &wanted, &bad_path);
}

int cfg_need(const struct cfg_node *n, const char *path, const struct cfg_node **out,
             struct cfg_error *err)
{
    const struct cfg_node *last;
    enum cfg_kind wanted;
    bool bad_path;

    *out = walk(n, path, &last, &wanted, &bad_path);
    if (*out)
        return 0;
    if (!n) {
        cfg_err_at(err, "", 0, 0, path, "required field is missing");
        return -ENOENT;
    }
    if (bad_path) {
        cfg_err_node(err, n, "malformed field path \"%.100s\"", path);
        return -EINVAL;
    }
    if (err) {
        /* The field is the whole path asked for, from the document root. */
        char base[sizeof err->field], field[2 * sizeof err->field];
        size_t bl = cfg_path(n, base, sizeof base);
        snprintf(field, sizeof field, "%s%s%s", base, bl && path[0] != '[' ? "." : "", path);
        if (wanted != CFG_NULL)
            cfg_err_at(err, last->file, last->line, last->column, field, "expected %s, got %s",
                   wanted == CFG_MAP ? "a mapping" : "a sequence", kind_phrase(last));
        else
            cfg_err_at(err, last->file, last->line, last->column, field, "required field is missing");
    }
    return -ENOENT;
}

/* ---- typed values ------------------------------------------------------ */

/* Cuts s to at most max bytes without splitting a UTF-8 sequence. */
size_t cfg_utf8_cut(const char *s, size_t n, size_t max)
{
    if (n <= max)
        return n;
    while (max > 0 && ((unsigned char)s[max] & 0xC0) == 0x80)
        max--;
    return max;
}

/* The text of a scalar for a message: escaped, cut to about 40 bytes. */
const char *cfg_shown(const struct cfg_node *n, char *buf, size_t size)
{
    size_t used;
    size_t w = json_escape(buf, size - 5, str_make(n->text, cfg_utf8_cut(n->text, n->len, 40)), &used);
    if (used < n->len)
        w += (size_t)snprintf(buf + w, size - w, "...");
    buf[w] = '\0';
    return buf;
}


static bool is_one_of(struct str s, const char *const *words)
{
    for (; *words; words++)
        if (str_eq(s, str_from_cstr(*words)))
            return true;
    return false;
}

bool cfg_all_digits(const char *p, size_t n, int base)
{
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        bool ok = base == 8    ? (c >= '0' && c <= '7')
                  : base == 10 ? (c >= '0' && c <= '9')
                               : ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
                                  (c >= 'A' && c <= 'F'));
        if (!ok)
            return false;
    }
    return true;
}

/* YAML 1.2 core schema resolution of a plain scalar. */
enum plain_type cfg_resolve_plain(struct str s)
{
    static const char *const nulls[] = { "", "~", "null", "Null", "NULL", NULL };
    static const char *const bools[] = { "true", "True", "TRUE", "false", "False", "FALSE", NULL };
    static const char *const specials[] = { ".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF",
                                            "-.inf", "-.Inf", "-.INF", ".nan", ".NaN", ".NAN",
                                            NULL };
    if (is_one_of(s, nulls))
        return PLAIN_NULL;
    if (is_one_of(s, bools))
        return PLAIN_BOOL;
    if (is_one_of(s, specials))
        return PLAIN_FLOAT;
    const char *p = s.p;
    size_t n = s.n;
    if (n > 2 && p[0] == '0' && (p[1] == 'x' || p[1] == 'o'))
        return cfg_all_digits(p + 2, n - 2, p[1] == 'x' ? 16 : 8) ? PLAIN_INT : PLAIN_STRING;
    if (n && (p[0] == '-' || p[0] == '+')) {
        p++;
        n--;
    }
    if (cfg_all_digits(p, n, 10))
        return PLAIN_INT;
    /* [0-9]+(\.[0-9]*)? | \.[0-9]+, then ([eE][-+]?[0-9]+)? */
    size_t i = 0, digits = 0;
    while (i < n && p[i] >= '0' && p[i] <= '9')
        i++, digits++;
    if (i < n && p[i] == '.') {
        i++;
        while (i < n && p[i] >= '0' && p[i] <= '9')
            i++, digits++;
    }
    if (digits == 0)
        return PLAIN_STRING;
    if (i < n && (p[i] == 'e' || p[i] == 'E')) {
        i++;
        if (i < n && (p[i] == '-' || p[i] == '+'))
            i++;
        if (!cfg_all_digits(p + i, n - i, 10))
            return PLAIN_STRING;
        i = n;
    }
    return i == n ? PLAIN_FLOAT : PLAIN_STRING;
}

static int need_node(const struct cfg_node *n, struct cfg_error *err)
{
    if (n)
        return 0;
    cfg_err_at(err, "", 0, 0, "", "required field is missing");
    return -ENOENT;
}

/* "expected X, got ..." with what was there. */
static int err_got(struct cfg_error *err, const struct cfg_node *n, const char *expected,
                   const char *hint)
{
    char buf[128];
    if (n->kind == CFG_MAP || n->kind == CFG_SEQ || n->kind == CFG_NULL)
        return cfg_err_node(err, n, "expected %s, got %s", expected, kind_phrase(n));
    return cfg_err_node(err, n, "expected %s, got %s\"%s\"%s", expected,
                    n->is_quoted && !n->is_env ? "the quoted string " : "",
                    cfg_shown(n, buf, sizeof buf),
                    hint ? hint : "");
}

/* Parses a core-schema integer; -EINVAL when it is not one, -ERANGE when it
 * does not fit in int64. */
int cfg_parse_int(struct str s, int64_t *out)
{
    const char *p = s.p;
    size_t n = s.n;
    bool neg = false;
    int base = 10;
    uint64_t v = 0, limit;

    if (n && (p[0] == '-' || p[0] == '+')) {
        neg = p[0] == '-';
        p++;
        n--;
    }
    if (n > 2 && p[0] == '0' && (p[1] == 'x' || p[1] == 'o')) {
        base = p[1] == 'x' ? 16 : 8;
        p += 2;
        n -= 2;
    }
    if (!cfg_all_digits(p, n, base))
        return -EINVAL;
    limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        unsigned d = c <= '9' ? (unsigned)(c - '0') : (unsigned)((c | 0x20) - 'a' + 10);
        if (v > (limit - d) / (unsigned)base)
            return -ERANGE;
        v = v * (unsigned)base + d;
    }
    *out = neg ? (int64_t)(0 - v) : (int64_t)v;
    return 0;
}

int cfg_as_int(const struct cfg_node *n, int64_t min, int64_t max, int64_t *out,
               struct cfg_error *err)
{
    int64_t v = 0;
    char buf[128];
    if (need_node(n, err))
        return -ENOENT;
    if (n->kind != CFG_SCALAR || (n->is_quoted && !n->is_env))
        return err_got(err, n, "an integer", NULL);
    int rc = cfg_parse_int(cfg_scalar(n), &v);
    if (rc == -EINVAL)
        return err_got(err, n, "an integer", NULL);
    if (rc == -ERANGE || v < min || v > max)
        return cfg_err_node(err, n, "must be between %" PRId64 " and %" PRId64 ", got %s", min, max,
                        cfg_shown(n, buf, sizeof buf));
    *out = v;
    return 0;
}

int cfg_as_bool(const struct cfg_node *n, bool *out, struct cfg_error *err)
{
    static const char *const yes[] = { "true", "True", "TRUE", NULL };
    static const char *const no[] = { "false", "False", "FALSE", NULL };
    static const char *const yaml11[] = { "yes", "Yes", "YES", "no", "No", "NO", "on", "On",
                                          "ON", "off", "Off", "OFF", "y", "Y", "n", "N", NULL };
    if (need_node(n, err))
        return -ENOENT;
    if (n->kind == CFG_SCALAR && (!n->is_quoted || n->is_env)) {
        struct str s = cfg_scalar(n);
        if (is_one_of(s, yes) || is_one_of(s, no)) {
            *out = is_one_of(s, yes);
            return 0;
        }
        if (is_one_of(s, yaml11))
            return err_got(err, n, "true or false",
                           " (yes/no/on/off are strings in YAML 1.2, not booleans)");
    }
    return err_got(err, n, "true or false", NULL);
}

int cfg_as_string(const struct cfg_node *n, const char **out, struct cfg_error *err)
{
    static const char *const type_names[] = { [PLAIN_NULL] = "null", [PLAIN_BOOL] = "boolean",
                                              [PLAIN_INT] = "integer", [PLAIN_FLOAT] = "number" };
    char buf[128];
    if (need_node(n, err))
        return -ENOENT;
    if (n->kind != CFG_SCALAR)
        return err_got(err, n, "a string", NULL);
    /* Mapping keys are strings whatever they look like. */
    if (!n->is_quoted && !n->is_env && n->name != n) {
        enum plain_type t = cfg_resolve_plain(cfg_scalar(n));
        if (t != PLAIN_STRING) {
            cfg_shown(n, buf, sizeof buf);
            return cfg_err_node(err, n, "expected a string, got %s %s (quote it: \"%s\")",
                            type_names[t], buf, buf);
        }
    }
    if (memchr(n->text, '\0', n->len))
        return cfg_err_node(err, n, "expected a string without NUL characters");
    *out = n->text;
    return 0;
}

static void fmt_duration(int64_t ms, char *buf, size_t size)
{
    if (ms != 0 && ms % 3600000 == 0)
        snprintf(buf, size, "%" PRId64 "h", ms / 3600000);
    else if (ms != 0 && ms % 60000 == 0)
        snprintf(buf, size, "%" PRId64 "m", ms / 60000);
    else if (ms != 0 && ms % 1000 == 0)
        snprintf(buf, size, "%" PRId64 "s", ms / 1000);
    else
        snprintf(buf, size, "%" PRId64 "ms", ms);
}

/* -EINVAL: not a duration; -ERANGE: too large; -EDOM: finer than 1ms. */
static int parse_duration(struct str s, int64_t *out)
{
    int64_t total = 0;
    size_t i = 0;

    if (str_eq(s, STR_LIT("0"))) {
        *out = 0;
        return 0;
    }
    if (s.n == 0)
        return -EINVAL;
    while (i < s.n) {
        uint64_t whole = 0, frac = 0, scale = 1;
        size_t digits = 0;
        while (i < s.n && s.p[i] >= '0' && s.p[i] <= '9') {
            if (whole > (UINT64_MAX - 9) / 10)
                return -ERANGE;
            whole = whole * 10 + (uint64_t)(s.p[i++] - '0');
            digits++;
        }
        if (i < s.n && s.p[i] == '.') {
            i++;
            while (i < s.n && s.p[i] >= '0' && s.p[i] <= '9') {
                /* 9 decimals are finer than any unit here needs. */
                if (scale < 1000000000) {
                    frac = frac * 10 + (uint64_t)(s.p[i] - '0');
                    scale *= 10;
                } else if (s.p[i] != '0') {
                    return -EDOM;
                }
                i++;
                digits++;
            }
        }
        if (digits == 0)
            return -EINVAL;
        uint64_t unit;
        if (i + 1 < s.n && s.p[i] == 'm' && s.p[i + 1] == 's') {
            unit = 1;
            i += 2;
        } else if (i < s.n && s.p[i] == 's') {
            unit = 1000;
            i++;
        } else if (i < s.n && s.p[i] == 'm') {
            unit = 60000;
            i++;
        } else if (i < s.n && s.p[i] == 'h') {
            unit = 3600000;
            i++;
        } else {
            return -EINVAL;
        }
        uint64_t ms, fms;
        if (__builtin_mul_overflow(whole, unit, &ms))
            return -ERANGE;
        fms = frac * unit; /* frac < 1e9, unit <= 3.6e6: fits */
        if (fms % scale)
            return -EDOM;
        if (__builtin_add_overflow(ms, fms / scale, &ms) || ms > (uint64_t)INT64_MAX ||
            __builtin_add_overflow(total, (int64_t)ms, &total))
            return -ERANGE;
    }
    *out = total;
    return 0;
}

int cfg_as_duration_ms(const struct cfg_node *n, int64_t min_ms, int64_t max_ms, int64_t *out,
                       struct cfg_error *err)
{
    static const char expected[] = "a duration such as \"250ms\", \"5s\", \"1m\" or \"1h\"";
    char buf[128], lo[32], hi[32];
    int64_t v = 0;
    if (need_node(n, err))
        return -ENOENT;
    if (n->kind != CFG_SCALAR)
        return err_got(err, n, expected, NULL);
    int rc = parse_duration(cfg_scalar(n), &v);
    if (rc == -EINVAL) {
        int64_t dummy;
        bool bare = cfg_parse_int(cfg_scalar(n), &dummy) != -EINVAL;
        return err_got(err, n, expected, bare ? " (a number needs a unit)" : NULL);
    }
    if (rc == -EDOM)
        return cfg_err_node(err, n, "duration %s is finer than a millisecond",
                        cfg_shown(n, buf, sizeof buf));
    fmt_duration(min_ms, lo, sizeof lo);
    fmt_duration(max_ms, hi, sizeof hi);
    if (rc == -ERANGE || v < min_ms || v > max_ms)
        return cfg_err_node(err, n, "must be between %s and %s, got %s", lo, hi,
                        cfg_shown(n, buf, sizeof buf));
    *out = v;
    return 0;
}

static void fmt_size(uint64_t v, char *buf, size_t size)
{
    static const char *const units[] = { "TiB", "GiB", "MiB", "KiB" };
    for (int i = 0; i < 4; i++) {
        uint64_t u = 1ull << (10 * (4 - i));
        if (v && v % u == 0) {
            snprintf(buf, size, "%" PRIu64 "%s", v / u, units[i]);
            return;
        }
    }
    snprintf(buf, size, "%" PRIu64, v);
}

static int parse_size(struct str s, uint64_t *out)
{
    static const struct {
        const char *suffix;
        uint64_t mult;
    } units[] = {
        { "", 1 },
        { "B", 1 },
        { "Ki", 1ull << 10 }, { "KiB", 1ull << 10 },
        { "Mi", 1ull << 20 }, { "MiB", 1ull << 20 },
        { "Gi", 1ull << 30 }, { "GiB", 1ull << 30 },
        { "Ti", 1ull << 40 }, { "TiB", 1ull << 40 },
        { "k", 1000 }, { "kB", 1000 }, { "KB", 1000 },
        { "M", 1000000 }, { "MB", 1000000 },
        { "G", 1000000000 }, { "GB", 1000000000 },
        { "T", 1000000000000ull }, { "TB", 1000000000000ull },
    };
    size_t i = 0;
    uint64_t v;
    while (i < s.n && s.p[i] >= '0' && s.p[i] <= '9')
        i++;
    if (i == 0)
        return -EINVAL;
    int rc = str_to_u64(str_make(s.p, i), &v);
    struct str suffix = str_make(s.p + i, s.n - i);
    for (size_t u = 0; u < sizeof units / sizeof *units; u++) {
        if (!str_eq(suffix, str_from_cstr(units[u].suffix)))
            continue;
        if (rc == -ERANGE || __builtin_mul_overflow(v, units[u].mult, out))
            return -ERANGE;
        return 0;
    }
    return -EINVAL;
}

int cfg_as_size(const struct cfg_node *n, uint64_t min, uint64_t max, uint64_t *out,
                struct cfg_error *err)
{
    static const char expected[] = "a size such as \"512\", \"16KiB\" or \"1MiB\"";
    char buf[128], lo[32], hi[32];
    uint64_t v = 0;
    if (need_node(n, err))
        return -ENOENT;
    if (n->kind != CFG_SCALAR)
        return err_got(err, n, expected, NULL);
    int rc = parse_size(cfg_scalar(n), &v);
    if (rc == -EINVAL)
        return err_got(err, n, expected, NULL);
    fmt_size(min, lo, sizeof lo);
    fmt_size(max, hi, sizeof hi);
    if (rc == -ERANGE || v < min || v > max)
        return cfg_err_node(err, n, "must be between %s and %s, got %s", lo, hi,
                        cfg_shown(n, buf, sizeof buf));
    *out = v;
    return 0;
}
