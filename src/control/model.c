/* model.c — loading manifests: files and directories into cfg docs, the
 * digest, the diagnostics, the walk that warns about every field no
 * decoder read, and the lookups. Decoding is in model_decode*.c, the
 * cross-resource checks in model_validate.c. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "control/model_internal.h"

struct source {
    const char *name;
    const char *text;
    size_t len;
};

/* ---- diagnostics ---------------------------------------------------------- */

/* One line each: control characters from quoted input become '?'. */
static int push_line(char ***items, size_t *n, const char *line)
{
    char *copy = strdup(line);
    for (char *p = copy; p && *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = '?';
    char **grown = copy ? realloc(*items, (*n + 1) * sizeof **items) : NULL;
    if (!grown) {
        free(copy);
        return -ENOMEM;
    }
    grown[*n] = copy;
    *items = grown;
    (*n)++;
    return 0;
}

void model_diag_add(struct mctx *c, bool is_error, const char *line)
{
    struct model_diag *d = c->diag;
    if (is_error && d->nerrors >= MODEL_MAX_DIAGS) {
        c->nerrors_dropped++;
        return;
    }
    if (!is_error && d->nwarnings >= MODEL_MAX_DIAGS) {
        c->nwarnings_dropped++;
        return;
    }
    int rc = is_error ? push_line(&d->errors, &d->nerrors, line) : push_line(&d->warnings, &d->nwarnings, line);
    if (rc < 0)
        c->oom = true;
    if (is_error && rc == 0)
        c->had_error = true;
}

static void diag_at(struct mctx *c, bool is_error, const struct cfg_node *n, const char *sub, const char *fmt,
                    va_list ap)
{
    struct cfg_error e;
    char path[256], line[1200];
    memset(&e, 0, sizeof e);
    if (is_error)
        c->had_error = true;
    snprintf(e.file, sizeof e.file, "%s", n && cfg_file(n) ? cfg_file(n) : "<input>");
    e.line = n ? cfg_line(n) : 0;
    e.column = n ? cfg_column(n) : 0;
    path[0] = '\0';
    if (n)
        cfg_path(n, path, sizeof path);
    if (sub)
        snprintf(e.field, sizeof e.field, "%s%s%s", path, path[0] && sub[0] != '[' ? "." : "", sub);
    else
        snprintf(e.field, sizeof e.field, "%s", path);
    vsnprintf(e.message, sizeof e.message, fmt, ap);
    cfg_error_format(&e, line, sizeof line);
    model_diag_add(c, is_error, line);
}

void model_err(struct mctx *c, const struct cfg_node *n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    diag_at(c, true, n, NULL, fmt, ap);
    va_end(ap);
}

void model_warn(struct mctx *c, const struct cfg_node *n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    diag_at(c, false, n, NULL, fmt, ap);
    va_end(ap);
}

void model_err_sub(struct mctx *c, const struct cfg_node *n, const char *sub, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    diag_at(c, true, n, sub, fmt, ap);
    va_end(ap);
}

void model_err_cfg(struct mctx *c, const struct cfg_error *e)
{
    char line[1200];
    cfg_error_format(e, line, sizeof line);
    model_diag_add(c, true, line);
    c->had_error = true;
}

void model_diag_free(struct model_diag *d)
{
    if (!d)
        return;
    for (size_t i = 0; i < d->nerrors; i++)
        free(d->errors[i]);
    for (size_t i = 0; i < d->nwarnings; i++)
        free(d->warnings[i]);
    free(d->errors);
    free(d->warnings);
    memset(d, 0, sizeof *d);
}

/* ---- node sets ------------------------------------------------------------ */

static size_t ptr_hash(const void *p)
{
    uint64_t x = (uint64_t)(uintptr_t)p;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return (size_t)x;
}

static int set_grow(struct node_set *s)
{
    size_t cap = s->cap ? s->cap * 2 : 1024;
    const struct cfg_node **slots = calloc(cap, sizeof *slots);
    if (!slots)
        return -ENOMEM;
    for (size_t i = 0; i < s->cap; i++) {
        if (!s->slots[i])
            continue;
        size_t j = ptr_hash(s->slots[i]) & (cap - 1);
        while (slots[j])
            j = (j + 1) & (cap - 1);
        slots[j] = s->slots[i];
    }
    free(s->slots);
    s->slots = slots;
    s->cap = cap;
    return 0;
}

static bool set_has(const struct node_set *s, const struct cfg_node *n)
{
    if (!s->cap || !n)
        return false;
    for (size_t j = ptr_hash(n) & (s->cap - 1); s->slots[j]; j = (j + 1) & (s->cap - 1))
        if (s->slots[j] == n)
            return true;
    return false;
}

static void set_add(struct mctx *c, struct node_set *s, const struct cfg_node *n)
{
    if (!n || set_has(s, n))
        return;
    if ((s->n + 1) * 2 > s->cap && set_grow(s) < 0) {
        c->oom = true;
        return;
    }
    size_t j = ptr_hash(n) & (s->cap - 1);
    while (s->slots[j])
        j = (j + 1) & (s->cap - 1);
    s->slots[j] = n;
    s->n++;
}

void model_mark_used(struct mctx *c, const struct cfg_node *n) { set_add(c, &c->used, n); }

void model_mark_opaque(struct mctx *c, const struct cfg_node *n)
{
    set_add(c, &c->used, n);
    set_add(c, &c->opaque, n);
}

void *model_alloc(struct mctx *c, size_t n)
{
    void *p = arena_alloc(c->arena, n ? n : 1);
    if (!p)
        c->oom = true;
    else
        memset(p, 0, n ? n : 1);
    return p;
}

char *model_strdup(struct mctx *c, const char *p, size_t n)
{
    char *s = arena_strdup(c->arena, str_make(p, n));
    if (!s)
        c->oom = true;
    return s;
}

/* ---- fields nobody read --------------------------------------------------- */

/* Keys that change nothing strata does (bookkeeping of the API server and
 * of kubectl, image pull settings with a local image store): silent. */
static bool is_harmless(const char *path)
{
    static const char *const suffixes[] = {
        "metadata.labels", "metadata.annotations", "metadata.uid", "metadata.resourceVersion",
        "metadata.generation", "metadata.creationTimestamp", "metadata.managedFields",
        "metadata.selfLink", "imagePullPolicy", "terminationMessagePath",
        "terminationMessagePolicy", "spec.revisionHistoryLimit", NULL,
    };
    if (strcmp(path, "status") == 0)
        return true;
    size_t n = strlen(path);
    for (const char *const *s = suffixes; *s; s++) {
        size_t k = strlen(*s);
        if (n >= k && strcmp(path + n - k, *s) == 0 && (n == k || path[n - k - 1] == '.'))
            return true;
    }
    return false;
}

static void walk_unused(struct mctx *c, const struct cfg_node *n)
{
    char path[256];
    if (cfg_kind(n) == CFG_SEQ) {
        for (size_t i = 0; i < cfg_count(n); i++)
            walk_unused(c, cfg_seq_item(n, i));
        return;
    }
    if (cfg_kind(n) != CFG_MAP)
        return;
    for (size_t i = 0; i < cfg_count(n); i++) {
        const struct cfg_node *k = cfg_map_key(n, i), *v = cfg_map_value(n, i);
        if (!set_has(&c->used, v)) {
            cfg_path(k, path, sizeof path);
            if (!is_harmless(path))
                model_warn(c, k, "not implemented by strata (ignored)");
            continue;
        }
        if (!set_has(&c->opaque, v))
            walk_unused(c, v);
    }
}

/* ---- loading -------------------------------------------------------------- */

static void digest_add(EVP_MD_CTX *md, const struct source *s)
{
    unsigned char len[8];
    for (int i = 0; i < 8; i++)
        len[i] = (unsigned char)((uint64_t)s->len >> (56 - 8 * i));
    EVP_DigestUpdate(md, s->name, strlen(s->name) + 1);
    EVP_DigestUpdate(md, len, sizeof len);
    EVP_DigestUpdate(md, s->text, s->len);
}

static int digest_sources(const struct source *srcs, size_t n, char hex[65])
{
    unsigned char d[32];
    unsigned int dn = 0;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (!md || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) {
        EVP_MD_CTX_free(md);
        return -ENOMEM;
    }
    for (size_t i = 0; i < n; i++)
        digest_add(md, &srcs[i]);
    int ok = EVP_DigestFinal_ex(md, d, &dn) == 1 && dn == 32;
    EVP_MD_CTX_free(md);
    if (!ok)
        return -ENOMEM;
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", d[i]);
    return 0;
}

static void free_internal(struct model_internal *in)
{
    if (!in)
        return;
    for (size_t i = 0; i < in->ndocs; i++)
        cfg_doc_free(in->docs[i]);
    free(in->docs);
    arena_free(&in->arena);
    free(in);
}

void model_free(struct model *m)
{
    if (!m)
        return;
    free_internal(m->internal);
    free(m);
}

static void parse_sources(struct mctx *c, struct model_internal *in, const struct source *srcs, size_t n)
{
    in->docs = calloc(n ? n : 1, sizeof *in->docs);
    if (!in->docs) {
        c->oom = true;
        return;
    }
    for (size_t i = 0; i < n; i++) {
        struct cfg_doc *doc = NULL;
        struct cfg_error err;
        memset(&err, 0, sizeof err);
        int rc = cfg_load_string(srcs[i].name, srcs[i].text, srcs[i].len, &doc, &err);
        if (rc == -ENOMEM)
            c->oom = true;
        if (rc < 0) {
            model_err_cfg(c, &err);
            continue;
        }
        in->docs[in->ndocs++] = doc;
    }
}

static void ctx_release(struct mctx *c)
{
    free(c->used.slots);
    free(c->opaque.slots);
    for (int k = 0; k < MK_COUNT; k++)
        free(c->roots[k]);
}

static void finish_diag(struct mctx *c)
{
    char line[128];
    if (c->nerrors_dropped) {
        snprintf(line, sizeof line, "... and %zu more errors", c->nerrors_dropped);
        c->diag->nerrors--; /* make room: the limit counts listed lines */
        free(c->diag->errors[c->diag->nerrors]);
        model_diag_add(c, true, line);
    }
    if (c->nwarnings_dropped) {
        snprintf(line, sizeof line, "... and %zu more warnings", c->nwarnings_dropped);
        c->diag->nwarnings--;
        free(c->diag->warnings[c->diag->nwarnings]);
        model_diag_add(c, false, line);
    }
}

static int load_sources(const struct source *srcs, size_t n, const char *dir, struct model **out,
                        struct model_diag *diag)
{
    struct mctx c;
    int rc = -ENOMEM;
    memset(&c, 0, sizeof c);
    c.diag = diag;
    struct model *m = calloc(1, sizeof *m);
    struct model_internal *in = calloc(1, sizeof *in);
    if (!m || !in) {
        free(m);
        free(in);
        return -ENOMEM;
    }
    arena_init(&in->arena, 64 * 1024, 0);
    m->internal = in;
    c.m = m;
    c.arena = &in->arena;
    if (dir)
        m->dir = model_strdup(&c, dir, strlen(dir));
    if (digest_sources(srcs, n, m->digest) < 0)
        goto out;
    parse_sources(&c, in, srcs, n);
    if (!c.oom)
        model_decode_docs(&c, in->docs, in->ndocs);
    if (!c.oom && !c.had_error)
        model_validate(&c);
    for (size_t i = 0; !c.oom && i < in->ndocs; i++)
        for (size_t d = 0; d < cfg_doc_count(in->docs[i]); d++)
            if (!set_has(&c.opaque, cfg_doc_root(in->docs[i], d)))
                walk_unused(&c, cfg_doc_root(in->docs[i], d));
    finish_diag(&c);
    if (c.oom)
        goto out;
    if (c.had_error) {
        rc = -EINVAL;
        goto out;
    }
    *out = m;
    m = NULL;
    rc = 0;
out:
    ctx_release(&c);
    model_free(m);
    return rc;
}

int model_load_buffers(const char *const *names, const char *const *texts, const size_t *lens, size_t n,
                       struct model **out, struct model_diag *diag)
{
    memset(diag, 0, sizeof *diag);
    *out = NULL;
    struct source *srcs = calloc(n ? n : 1, sizeof *srcs);
    if (!srcs)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++)
        srcs[i] = (struct source){ names[i] ? names[i] : "<string>", texts[i], lens[i] };
    int rc = load_sources(srcs, n, NULL, out, diag);
    free(srcs);
    return rc;
}

/* Reads path whole (at most CFG_MAX_FILE bytes) into *text. */
static int read_file(const char *path, char **text, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    size_t cap = 64 * 1024, n = 0;
    char *buf = malloc(cap);
    int rc = buf ? 0 : -ENOMEM;
    while (rc == 0) {
        if (n == cap) {
            char *grown = cap > CFG_MAX_FILE ? NULL : realloc(buf, cap * 2);
            if (!grown) {
                rc = cap > CFG_MAX_FILE ? -EFBIG : -ENOMEM;
                break;
            }
            buf = grown;
            cap *= 2;
        }
        ssize_t r = read(fd, buf + n, cap - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            rc = -errno;
        else if (r == 0)
            break;
        else
            n += (size_t)r;
    }
    close(fd);
    if (rc == 0 && n > CFG_MAX_FILE)
        rc = -EFBIG;
    if (rc < 0) {
        free(buf);
        return rc;
    }
    *text = buf;
    *len = n;
    return 0;
}

static int load_paths(const char *const *paths, size_t n, const char *dir, struct model **out,
                      struct model_diag *diag)
{
    memset(diag, 0, sizeof *diag);
    *out = NULL;
    struct source *srcs = calloc(n ? n : 1, sizeof *srcs);
    if (!srcs)
        return -ENOMEM;
    int rc = 0;
    size_t got = 0;
    for (; got < n; got++) {
        char *text = NULL;
        size_t len = 0;
        rc = read_file(paths[got], &text, &len);
        if (rc < 0) {
            char line[1200];
            snprintf(line, sizeof line, "%s: cannot read: %s", paths[got],
                     rc == -EFBIG ? "larger than 16 MiB" : strerror(-rc));
            push_line(&diag->errors, &diag->nerrors, line);
            break;
        }
        srcs[got] = (struct source){ paths[got], text, len };
    }
    if (rc == 0)
        rc = load_sources(srcs, n, dir, out, diag);
    for (size_t i = 0; i < got; i++)
        free((char *)srcs[i].text);
    free(srcs);
    return rc;
}

int model_load_files(const char *const *paths, size_t n, struct model **out, struct model_diag *diag)
{
    return load_paths(paths, n, NULL, out, diag);
}

static bool is_manifest_name(const char *name)
{
    size_t n = strlen(name);
    if (name[0] == '.')
        return false;
    return (n > 5 && strcmp(name + n - 5, ".yaml") == 0) || (n > 4 && strcmp(name + n - 4, ".yml") == 0);
}

static int cmp_names(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int model_load_dir(const char *dir, struct model **out, struct model_diag *diag)
{
    memset(diag, 0, sizeof *diag);
    *out = NULL;
    DIR *d = opendir(dir);
    if (!d) {
        int rc = -errno;
        char line[1200];
        snprintf(line, sizeof line, "%s: cannot read the directory: %s", dir, strerror(-rc));
        push_line(&diag->errors, &diag->nerrors, line);
        return rc;
    }
    char **paths = NULL;
    size_t n = 0;
    int rc = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!is_manifest_name(e->d_name))
            continue;
        char *p = NULL;
        struct stat st;
        if (asprintf(&p, "%s/%s", dir, e->d_name) < 0) {
            rc = -ENOMEM;
            break;
        }
        if (stat(p, &st) < 0 || !S_ISREG(st.st_mode)) {
            free(p);
            continue;
        }
        char **grown = realloc(paths, (n + 1) * sizeof *paths);
        if (!grown) {
            free(p);
            rc = -ENOMEM;
            break;
        }
        paths = grown;
        paths[n++] = p;
    }
    closedir(d);
    if (rc == 0) {
        qsort(paths, n, sizeof *paths, cmp_names);
        rc = load_paths((const char *const *)paths, n, dir, out, diag);
    }
    for (size_t i = 0; i < n; i++)
        free(paths[i]);
    free(paths);
    return rc;
}

/* ---- lookups -------------------------------------------------------------- */

#define FIND_BY_NAME(arr, count, field, key)                                                            \
    do {                                                                                                \
        if (!m || !(key))                                                                               \
            return NULL;                                                                                \
        for (size_t i_ = 0; i_ < m->count; i_++)                                                        \
            if (m->arr[i_].field && strcmp(m->arr[i_].field, (key)) == 0)                               \
                return &m->arr[i_];                                                                     \
        return NULL;                                                                                    \
    } while (0)

const struct model_deployment *model_deployment(const struct model *m, const char *name)
{
    FIND_BY_NAME(deployments, ndeployments, name, name);
}

const struct model_service *model_service(const struct model *m, const char *name)
{
    FIND_BY_NAME(services, nservices, name, name);
}

const struct model_secret *model_secret(const struct model *m, const char *name)
{
    FIND_BY_NAME(secrets, nsecrets, name, name);
}

const struct model_configmap *model_configmap(const struct model *m, const char *name)
{
    FIND_BY_NAME(configmaps, nconfigmaps, name, name);
}

const struct model_destinationrule *model_destinationrule(const struct model *m, const char *host)
{
    FIND_BY_NAME(destinationrules, ndestinationrules, host, host);
}

const char *model_label(const struct model_labels *labels, const char *key)
{
    if (!labels || !key)
        return NULL;
    for (size_t i = 0; i < labels->n; i++)
        if (strcmp(labels->items[i].key, key) == 0)
            return labels->items[i].value;
    return NULL;
}

bool model_labels_match(const struct model_labels *sel, const struct model_labels *labels)
{
    if (!sel || sel->n == 0)
        return false;
    for (size_t i = 0; i < sel->n; i++) {
        const char *v = model_label(labels, sel->items[i].key);
        if (!v || strcmp(v, sel->items[i].value) != 0)
            return false;
    }
    return true;
}
