/* observability.c — deploy/observability/ into the local Prometheus and
 * Alertmanager: PrometheusRule specs become rule files, the
 * alertmanager-config ConfigMap becomes Alertmanager's config pointed at
 * the control plane's webhook (observability.h). */
#include "control/observability.h"

#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/cfg.h"
#include "core/fileio.h"

/* The control plane's receiver (the lead's admin route). */
#define WEBHOOK_PATH "/v1/alerts/webhook"
/* 64 objects: sixteen times what deploy/ ships; past that, something else
 * than a rules directory is being read. */
#define MAX_OUTPUTS 64

/* Where nodes of a YAML document embedded in a manifest's string (the
 * ConfigMap's alertmanager.yml) really are: their lines shifted by the
 * line of the string, their columns by its indentation, their paths
 * prefixed. Zero for the manifest's own nodes. */
struct where {
    int dline, dcol;
    const char *prefix;
};

struct output {
    char *path;
    char *text; /* malloc'd JSON */
    char origin[300]; /* file:line of the object that produced it */
};

struct install {
    char *err;
    size_t errsz;
    struct output out[MAX_OUTPUTS];
    size_t nout;
};

static int fail(struct install *in, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(struct install *in, int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(in->err, in->errsz, fmt, ap);
    va_end(ap);
    return rc;
}

/* A cfg error moved to where it really is, then formatted into in->err. */
static int fail_cfg(struct install *in, int rc, struct cfg_error *e, const struct where *w)
{
    if (w && w->prefix) {
        if (e->line > 0)
            e->line += w->dline;
        e->column = e->column > 0 && w->dcol >= 0 ? e->column + w->dcol : 0;
        char field[sizeof e->field];
        memcpy(field, e->field, sizeof field);
        int n = snprintf(e->field, sizeof e->field, "%s%s", w->prefix, field[0] && field[0] != '[' ? "." : "");
        if (n > 0 && (size_t)n < sizeof e->field) {
            size_t len = strnlen(field, sizeof field), room = sizeof e->field - 1 - (size_t)n;
            len = len < room ? len : room;
            memcpy(e->field + n, field, len);
            e->field[(size_t)n + len] = '\0';
        }
    }
    cfg_error_format(e, in->err, in->errsz);
    return rc;
}

static int fail_node(struct install *in, const struct cfg_node *n, const struct where *w, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int fail_node(struct install *in, const struct cfg_node *n, const struct where *w, const char *fmt, ...)
{
    struct cfg_error e = { 0 };
    snprintf(e.file, sizeof e.file, "%s", cfg_file(n) ? cfg_file(n) : "");
    e.line = cfg_line(n);
    e.column = cfg_column(n);
    cfg_path(n, e.field, sizeof e.field);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e.message, sizeof e.message, fmt, ap);
    va_end(ap);
    return fail_cfg(in, -EINVAL, &e, w);
}

/* ---- YAML tree → JSON ------------------------------------------------------ */

/* A scalar typed as YAML 1.2's core schema types it (what Kubernetes and
 * Prometheus' own YAML reader do): quoted → string; plain null/bool/int/
 * float → that; anything else plain → string. */
static json_t *scalar_json(struct install *in, const struct cfg_node *n, const struct where *w)
{
    struct str s = cfg_scalar(n);
    if (cfg_is_quoted(n))
        return json_stringn(s.p, s.n);
    struct cfg_error scratch;
    bool b;
    int64_t i;
    const char *text;
    if (cfg_as_bool(n, &b, &scratch) == 0)
        return json_boolean(b);
    if (cfg_as_int(n, INT64_MIN, INT64_MAX, &i, &scratch) == 0)
        return json_integer((json_int_t)i);
    if (cfg_as_string(n, &text, &scratch) == 0)
        return json_stringn(s.p, s.n);
    /* A float, or an integer past int64 (which strtod turns into one). */
    /* strtod reads neither YAML's .inf nor .nan (nor JSON any infinity). */
    char *end;
    double d = strtod(s.p, &end);
    if (end != s.p + s.n || !isfinite(d)) {
        fail_node(in, n, w, "%.*s has no JSON form; quote it if a string is meant", (int)s.n, s.p);
        return NULL;
    }
    return json_real(d);
}

static json_t *to_json(struct install *in, const struct cfg_node *n, const struct where *w)
{
    json_t *v = NULL;
    switch (cfg_kind(n)) {
    case CFG_NULL:
        return json_null();
    case CFG_SCALAR:
        v = scalar_json(in, n, w);
        if (!v && !in->err[0])
            fail(in, -ENOMEM, "out of memory");
        return v;
    case CFG_MAP:
        v = json_object();
        for (size_t i = 0; v && i < cfg_count(n); i++) {
            struct str k = cfg_scalar(cfg_map_key(n, i));
            if (memchr(k.p, '\0', k.n)) {
                fail_node(in, cfg_map_key(n, i), w, "a key with a NUL byte has no JSON form");
                json_decref(v);
                return NULL;
            }
            json_t *kid = to_json(in, cfg_map_value(n, i), w);
            if (!kid || json_object_setn_new(v, k.p, k.n, kid) < 0) {
                if (kid)
                    fail(in, -ENOMEM, "out of memory");
                json_decref(v);
                return NULL;
            }
        }
        break;
    case CFG_SEQ:
        v = json_array();
        for (size_t i = 0; v && i < cfg_count(n); i++) {
            json_t *kid = to_json(in, cfg_seq_item(n, i), w);
            if (!kid || json_array_append_new(v, kid) < 0) {
                if (kid)
                    fail(in, -ENOMEM, "out of memory");
                json_decref(v);
                return NULL;
            }
        }
        break;
    }
    if (!v)
        fail(in, -ENOMEM, "out of memory");
    return v;
}

/* ---- outputs --------------------------------------------------------------- */

static int add_output(struct install *in, const char *path, json_t *doc, const struct cfg_node *at)
{
    for (size_t i = 0; i < in->nout; i++)
        if (!strcmp(in->out[i].path, path))
            return fail_node(in, at, NULL, "installs %s, as %s does already", path, in->out[i].origin);
    if (in->nout == MAX_OUTPUTS)
        return fail_node(in, at, NULL, "more than %d objects to install", MAX_OUTPUTS);
    /* 15 digits: a decimal written with at most 15 comes back as written. */
    char *text = json_dumps(doc, JSON_INDENT(2) | JSON_REAL_PRECISION(15));
    char *p = strdup(path);
    if (!text || !p) {
        free(text);
        free(p);
        return fail(in, -ENOMEM, "out of memory");
    }
    struct output *o = &in->out[in->nout++];
    o->path = p;
    o->text = text;
    snprintf(o->origin, sizeof o->origin, "%s:%d", cfg_file(at), cfg_line(at));
    return 0;
}

static int write_outputs(struct install *in)
{
    for (size_t i = 0; i < in->nout; i++) {
        struct output *o = &in->out[i];
        size_t n = strlen(o->text);
        /* json_dumps leaves no final newline; files end with one. */
        char *t = realloc(o->text, n + 2);
        if (!t)
            return fail(in, -ENOMEM, "out of memory");
        o->text = t;
        memcpy(t + n, "\n", 2);
        int rc = file_write_atomic(o->path, t, n + 1, 0644);
        if (rc < 0)
            return fail(in, rc, "%s: cannot write: %s", o->path, strerror(-rc));
    }
    return 0;
}

/* ---- PrometheusRule --------------------------------------------------------- */

static bool is_object_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 253 || s[0] == '.' || s[0] == '-')
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '-' || *s == '.'))
            return false;
    return true;
}

static int need(struct install *in, const struct cfg_node *n, const char *path, enum cfg_kind kind,
                const struct where *w, const struct cfg_node **out)
{
    struct cfg_error e = { 0 };
    if (cfg_need(n, path, out, &e) < 0)
        return fail_cfg(in, -EINVAL, &e, w);
    if (cfg_kind(*out) != kind)
        return fail_node(in, *out, w, "expected a %s, got a %s", cfg_kind_name(kind), cfg_kind_name(cfg_kind(*out)));
    return 0;
}

static int prometheus_rule(struct install *in, const struct cfg_node *root, const char *rules_dir)
{
    const struct cfg_node *name_n, *groups;
    const char *name;
    struct cfg_error e = { 0 };
    int rc = need(in, root, "metadata.name", CFG_SCALAR, NULL, &name_n);
    if (rc < 0)
        return rc;
    if (cfg_as_string(name_n, &name, &e) < 0)
        return fail_cfg(in, -EINVAL, &e, NULL);
    if (!is_object_name(name))
        return fail_node(in, name_n, NULL, "\"%s\" is not an object name (lower-case letters, digits, '-', '.')",
                         name);
    if ((rc = need(in, root, "spec.groups", CFG_SEQ, NULL, &groups)) < 0)
        return rc;
    if (cfg_count(groups) == 0)
        return fail_node(in, groups, NULL, "no rule groups");
    for (size_t i = 0; i < cfg_count(groups); i++) {
        const struct cfg_node *g = cfg_seq_item(groups, i), *gname, *rules;
        if (cfg_kind(g) != CFG_MAP)
            return fail_node(in, g, NULL, "expected a mapping, got a %s", cfg_kind_name(cfg_kind(g)));
        if ((rc = need(in, g, "name", CFG_SCALAR, NULL, &gname)) < 0 ||
            (rc = need(in, g, "rules", CFG_SEQ, NULL, &rules)) < 0)
            return rc;
    }
    char path[PATH_MAX];
    if ((size_t)snprintf(path, sizeof path, "%s/%s.yml", rules_dir, name) >= sizeof path)
        return fail_node(in, name_n, NULL, "%s/%s.yml: path too long", rules_dir, name);
    json_t *spec = to_json(in, cfg_get(root, "spec"), NULL);
    if (!spec)
        return in->err[0] ? -EINVAL : -ENOMEM;
    rc = add_output(in, path, spec, root);
    json_decref(spec);
    return rc;
}

/* ---- the Alertmanager ConfigMap ---------------------------------------------- */

/* Points every webhook to the control plane at admin_addr with the bearer
 * token file; returns how many it changed, or -ENOMEM. */
static int rewrite_webhooks(json_t *am, const char *admin_addr, const char *token_file)
{
    if (!strncmp(admin_addr, "http://", 7))
        admin_addr += 7;
    int changed = 0;
    size_t i, j;
    json_t *r, *wc;
    json_array_foreach(json_object_get(am, "receivers"), i, r)
    {
        json_array_foreach(json_object_get(r, "webhook_configs"), j, wc)
        {
            const char *url = json_string_value(json_object_get(wc, "url"));
            const char *auth = url ? strstr(url, "://") : NULL;
            const char *path = auth ? strchr(auth + 3, '/') : NULL;
            if (!path || strncmp(path, WEBHOOK_PATH, strlen(WEBHOOK_PATH)) != 0)
                continue;
            char *fresh = NULL;
            if (asprintf(&fresh, "http://%s%s", admin_addr, path) < 0)
                return -ENOMEM;
            json_t *hc = json_object_get(wc, "http_config");
            if (!json_is_object(hc)) {
                hc = json_object();
                if (json_object_set_new(wc, "http_config", hc) < 0) {
                    free(fresh);
                    return -ENOMEM;
                }
            }
            /* Alertmanager accepts one kind of credentials per client. */
            static const char *const creds[] = { "basic_auth", "bearer_token", "bearer_token_file", "oauth2" };
            for (size_t k = 0; k < sizeof creds / sizeof creds[0]; k++)
                json_object_del(hc, creds[k]);
            int rc = json_object_set_new(wc, "url", json_string(fresh));
            free(fresh);
            if (rc < 0 || json_object_set_new(hc, "authorization",
                                              json_pack("{s:s, s:s}", "type", "Bearer", "credentials_file",
                                                        token_file)) < 0)
                return -ENOMEM;
            changed++;
        }
    }
    return changed;
}

/* The line the string value n's content starts on, less one, and its
 * indentation: a block scalar (| or >) starts on the line after its
 * indicator; a flow scalar on its own line (its columns are not kept). */
static void embedded_where(const char *text, const struct cfg_node *n, struct where *w)
{
    const char *p = text;
    for (int line = 1; line < cfg_line(n) && p; line++)
        if ((p = strchr(p, '\n')))
            p++;
    const char *at = p;
    for (int col = 1; at && *at && *at != '\n' && col < cfg_column(n); at++)
        if ((*(const unsigned char *)at & 0xC0) != 0x80)
            col++;
    while (at && (*at & 0xC0) == 0x80)
        at++;
    bool block = at && (*at == '|' || *at == '>');
    w->dline = block ? cfg_line(n) : cfg_line(n) - 1;
    w->dcol = -1;
    if (block && (p = strchr(at, '\n'))) {
        int indent = 0;
        while (p[1 + indent] == ' ')
            indent++;
        w->dcol = indent;
    }
}

static int alertmanager_config(struct install *in, const char *text, const struct cfg_node *root,
                               const char *am_path, const char *admin_addr, const char *token_file)
{
    const struct cfg_node *data, *v;
    const char *yml;
    struct cfg_error e = { 0 };
    int rc = need(in, root, "data", CFG_MAP, NULL, &data);
    if (rc < 0)
        return rc;
    if (!(v = cfg_map_get(data, "alertmanager.yml")))
        return fail_node(in, data, NULL, "no key alertmanager.yml");
    if (cfg_as_string(v, &yml, &e) < 0)
        return fail_cfg(in, -EINVAL, &e, NULL);
    struct where w = { .prefix = "data[alertmanager.yml]" };
    embedded_where(text, v, &w);
    struct cfg_doc *doc = NULL;
    struct str s = cfg_scalar(v);
    if ((rc = cfg_load_string(cfg_file(v), s.p, s.n, &doc, &e)) < 0)
        return fail_cfg(in, rc, &e, &w);
    const struct cfg_node *amroot = cfg_doc_root(doc, 0);
    json_t *am = NULL;
    if (cfg_doc_count(doc) != 1 || cfg_kind(amroot) != CFG_MAP) {
        rc = fail_node(in, v, NULL, "expected one YAML mapping (Alertmanager's config)");
        goto out;
    }
    if (!(am = to_json(in, amroot, &w))) {
        rc = in->err[0] ? -EINVAL : -ENOMEM;
        goto out;
    }
    if ((rc = rewrite_webhooks(am, admin_addr, token_file)) < 0) {
        fail(in, rc, "out of memory");
        goto out;
    }
    if (rc == 0) {
        rc = fail_node(in, v, NULL,
                       "no receiver has a webhook_configs url with path " WEBHOOK_PATH
                       ": the control plane would see no alert");
        goto out;
    }
    rc = add_output(in, am_path, am, root);
out:
    json_decref(am);
    cfg_doc_free(doc);
    return rc;
}

/* ---- the directory ------------------------------------------------------------ */

static bool scalar_is(const struct cfg_node *root, const char *path, const char *want)
{
    const struct cfg_node *n = cfg_get(root, path);
    struct str s = cfg_scalar(n);
    return cfg_kind(n) == CFG_SCALAR && str_eq(s, str_from_cstr(want));
}

static int install_file(struct install *in, const char *path, const char *rules_dir, const char *am_path,
                        const char *admin_addr, const char *token_file, bool *seen_am)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return fail(in, -errno, "%s: cannot open: %s", path, strerror(errno));
    char *text = NULL;
    size_t len = 0;
    struct stat st;
    int rc = 0;
    if (fstat(fileno(f), &st) < 0 || st.st_size > (off_t)CFG_MAX_FILE)
        rc = fail(in, -EFBIG, "%s: larger than %u bytes", path, CFG_MAX_FILE);
    else if (!(text = malloc((size_t)st.st_size + 1)))
        rc = fail(in, -ENOMEM, "out of memory");
    else if ((len = fread(text, 1, (size_t)st.st_size, f)) != (size_t)st.st_size || ferror(f))
        rc = fail(in, -EIO, "%s: short read", path);
    fclose(f);
    if (rc < 0) {
        free(text);
        return rc;
    }
    text[len] = '\0';
    struct cfg_doc *doc = NULL;
    struct cfg_error e = { 0 };
    if ((rc = cfg_load_string(path, text, len, &doc, &e)) < 0) {
        free(text);
        return fail_cfg(in, rc, &e, NULL);
    }
    for (size_t i = 0; rc == 0 && i < cfg_doc_count(doc); i++) {
        const struct cfg_node *root = cfg_doc_root(doc, i);
        if (cfg_kind(root) != CFG_MAP)
            continue;
        if (scalar_is(root, "apiVersion", "monitoring.coreos.com/v1") && scalar_is(root, "kind", "PrometheusRule")) {
            rc = prometheus_rule(in, root, rules_dir);
        } else if (scalar_is(root, "apiVersion", "v1") && scalar_is(root, "kind", "ConfigMap") &&
                   scalar_is(root, "metadata.name", "alertmanager-config")) {
            if (*seen_am)
                rc = fail_node(in, root, NULL, "a second ConfigMap alertmanager-config");
            else
                rc = alertmanager_config(in, text, root, am_path, admin_addr, token_file);
            *seen_am = true;
        }
    }
    cfg_doc_free(doc);
    free(text);
    return rc;
}

static int cmp_names(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static bool is_yaml_name(const char *name)
{
    size_t n = strlen(name);
    return name[0] != '.' &&
           ((n > 5 && !strcmp(name + n - 5, ".yaml")) || (n > 4 && !strcmp(name + n - 4, ".yml")));
}

int observability_install(const char *deploy_dir, const char *prom_rules_dir, const char *am_config_path,
                          const char *admin_addr, const char *token_file, char *err, size_t errsz)
{
    char dummy[1];
    struct install in = { .err = errsz ? err : dummy, .errsz = errsz ? errsz : sizeof dummy };
    in.err[0] = '\0';
    char dir[PATH_MAX];
    if ((size_t)snprintf(dir, sizeof dir, "%s/observability", deploy_dir) >= sizeof dir)
        return fail(&in, -ENAMETOOLONG, "%s/observability: path too long", deploy_dir);
    DIR *d = opendir(dir);
    if (!d) {
        if (errno == ENOENT)
            return 0;
        return fail(&in, -errno, "%s: cannot read the directory: %s", dir, strerror(errno));
    }
    char **paths = NULL;
    size_t n = 0;
    int rc = 0;
    struct dirent *ent;
    while ((ent = readdir(d))) {
        if (!is_yaml_name(ent->d_name))
            continue;
        char *p = NULL;
        struct stat st;
        char **grown = NULL;
        if (asprintf(&p, "%s/%s", dir, ent->d_name) < 0 || !(grown = realloc(paths, (n + 1) * sizeof *paths))) {
            if (p)
                free(p);
            rc = fail(&in, -ENOMEM, "out of memory");
            break;
        }
        paths = grown;
        if (stat(p, &st) < 0 || !S_ISREG(st.st_mode)) {
            free(p);
            continue;
        }
        paths[n++] = p;
    }
    closedir(d);
    if (rc == 0)
        qsort(paths, n, sizeof *paths, cmp_names);
    bool seen_am = false;
    for (size_t i = 0; rc == 0 && i < n; i++)
        rc = install_file(&in, paths[i], prom_rules_dir, am_config_path, admin_addr, token_file, &seen_am);
    if (rc == 0)
        rc = write_outputs(&in);
    for (size_t i = 0; i < n; i++)
        free(paths[i]);
    free(paths);
    for (size_t i = 0; i < in.nout; i++) {
        free(in.out[i].path);
        free(in.out[i].text);
    }
    return rc;
}
