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

extern char **environ;

/* ---- loading ----------------------------------------------------------- */

struct frame {
    struct cfg_node *node;
    struct cfg_node **kids; /* malloc'd while open; copied to the arena at the end */
    size_t n, cap;
};

struct builder {
    struct cfg_doc *doc;
    const char *input;
    size_t len;
    struct frame stack[CFG_MAX_DEPTH];
    int depth;
    struct cfg_node *root;
    struct cfg_error *err;
};

static int mark_line(yaml_mark_t m) { return m.line < INT_MAX ? (int)m.line + 1 : INT_MAX; }
static int mark_col(yaml_mark_t m) { return m.column < INT_MAX ? (int)m.column + 1 : INT_MAX; }

static struct cfg_node *node_new(struct cfg_doc *doc, enum cfg_kind kind, const char *file,
                                 int line, int column)
{
    if (doc->nodes >= CFG_MAX_NODES)
        return NULL;
    struct cfg_node *n = arena_alloc(&doc->arena, sizeof *n);
    if (!n)
        return NULL;
    memset(n, 0, sizeof *n);
    n->kind = kind;
    n->file = file;
    n->line = line;
    n->column = column;
    n->doc = doc;
    n->text = "";
    doc->nodes++;
    return n;
}

/* node_new failed: was it the bound or memory? */
static int node_fail(struct cfg_doc *doc, struct cfg_error *err, const char *file, int line,
                     int column)
{
    if (doc->nodes >= CFG_MAX_NODES)
        return cfg_err_at(err, file, line, column, "", "more than %d nodes", CFG_MAX_NODES);
    cfg_err_at(err, file, line, column, "", "out of memory");
    return -ENOMEM;
}

static int frame_push(struct frame *f, struct cfg_node *n)
{
    if (f->n == f->cap) {
        size_t cap = f->cap ? 2 * f->cap : 8;
        struct cfg_node **p = realloc(f->kids, cap * sizeof *p);
        if (!p)
            return -ENOMEM;
        f->kids = p;
        f->cap = cap;
    }
    f->kids[f->n++] = n;
    return 0;
}

/* "!!int" for the standard tags, the tag itself for others. */
static void tag_shown(const yaml_char_t *tag, char *buf, size_t size)
{
    static const char std[] = "tag:yaml.org,2002:";
    const char *t = (const char *)tag;
    struct str s;
    char *w = buf;
    if (strncmp(t, std, sizeof std - 1) == 0) {
        memcpy(w, "!!", 2);
        w += 2;
        size -= 2;
        t += sizeof std - 1;
    }
    s = str_from_cstr(t);
    size_t used, n = json_escape(w, size - 4, str_make(s.p, cfg_utf8_cut(s.p, s.n, 40)), &used);
    if (used < s.n)
        n += (size_t)snprintf(w + n, size - n, "...");
    w[n] = '\0';
}

/* Adds a node where the event stream puts it: the root, the next item of
 * the open sequence, or the next key or value of the open map. */
static int attach(struct builder *b, struct cfg_node *n)
{
    if (b->depth == 0) {
        b->root = n;
        return 0;
    }
    struct frame *f = &b->stack[b->depth - 1];
    struct cfg_node *parent = f->node;
    if (parent->kind == CFG_MAP) {
        if (f->n % 2 == 0) {
            if (n->kind == CFG_MAP || n->kind == CFG_SEQ) {
                char path[sizeof b->err->field];
                cfg_path(parent, path, sizeof path);
                return cfg_err_at(b->err, n->file, n->line, n->column, path,
                              "a %s as a mapping key is not supported; keys are strings",
                              cfg_kind_name(n->kind));
            }
            n->kind = CFG_SCALAR; /* keys are strings, even "null" or "" */
            n->name = n;
        } else {
            n->name = f->kids[f->n - 1];
        }
        n->index = f->n / 2;
    } else {
        n->index = f->n;
    }
    n->parent = parent;
    if (frame_push(f, n) < 0)
        return cfg_err_at(b->err, n->file, n->line, n->column, "", "out of memory"), -ENOMEM;
    return 0;
}

static bool key_eq(const struct cfg_node *a, const struct cfg_node *b)
{
    return a->len == b->len && memcmp(a->text, b->text, a->len) == 0;
}

static int key_cmp(const void *pa, const void *pb)
{
    const struct cfg_node *a = *(const struct cfg_node *const *)pa;
    const struct cfg_node *b = *(const struct cfg_node *const *)pb;
    int c = memcmp(a->text, b->text, a->len < b->len ? a->len : b->len);
    if (c)
        return c;
    if (a->len != b->len)
        return a->len < b->len ? -1 : 1;
    return a->index < b->index ? -1 : a->index > b->index;
}

/* Reports the repeated key that comes first in the document. Small maps
 * compare pairwise; large ones sort, so a 100,000-key map costs n log n. */
static int check_duplicates(struct builder *b, const struct cfg_node *map)
{
    const struct cfg_node *first = NULL, *again = NULL;
    size_t n = map->n;

    if (n < 2)
        return 0;
    if (n <= 16) {
        for (size_t j = 1; j < n && !again; j++)
            for (size_t i = 0; i < j; i++)
                if (key_eq(map->kids[2 * i], map->kids[2 * j])) {
                    first = map->kids[2 * i];
                    again = map->kids[2 * j];
                    break;
                }
    } else {
        const struct cfg_node **keys = malloc(n * sizeof *keys);
        if (!keys)
            return cfg_err_at(b->err, map->file, map->line, map->column, "", "out of memory"),
                   -ENOMEM;
        for (size_t i = 0; i < n; i++)
            keys[i] = map->kids[2 * i];
        qsort(keys, n, sizeof *keys, key_cmp);
        for (size_t i = 1; i < n; i++) {
            /* keys[i - 1] starts a run of equal keys when it differs from
             * the one before it; the run's second entry is its first repeat. */
            if (!key_eq(keys[i - 1], keys[i]) || (i >= 2 && key_eq(keys[i - 2], keys[i - 1])))
                continue;
            if (!again || keys[i]->index < again->index) {
                first = keys[i - 1];
                again = keys[i];
            }
        }
        free(keys);
    }
    if (!again)
        return 0;
    char buf[128];
    return cfg_err_node(b->err, again, "duplicate key \"%s\" (first defined at line %d, column %d)",
                    cfg_shown(again, buf, sizeof buf), first->line, first->column);
}

static int close_collection(struct builder *b)
{
    struct frame *f = &b->stack[--b->depth];
    struct cfg_node *n = f->node;
    int rc = 0;

    if (f->n) {
        n->kids = arena_alloc(&b->doc->arena, f->n * sizeof *n->kids);
        if (!n->kids) {
            rc = -ENOMEM;
            cfg_err_at(b->err, n->file, n->line, n->column, "", "out of memory");
            goto out;
        }
        memcpy(n->kids, f->kids, f->n * sizeof *n->kids);
    }
    n->n = n->kind == CFG_MAP ? f->n / 2 : f->n;
    if (n->kind == CFG_MAP)
        rc = check_duplicates(b, n);
out:
    free(f->kids);
    f->kids = NULL;
    return rc;
}

/* Line and column (1-based, characters) of byte offset off. */
static void locate_offset(const char *in, size_t len, size_t off, int *line, int *column)
{
    int l = 1, c = 1;
    for (size_t i = 0; i < off && i < len; i++) {
        if (in[i] == '\n') {
            l++;
            c = 1;
        } else if (((unsigned char)in[i] & 0xC0) != 0x80) {
            c++;
        }
    }
    *line = l;
    *column = c;
}

/* The byte at 1-based line/column (characters), or -1. */
static int char_at(const char *in, size_t len, int line, int column)
{
    size_t i = 0;
    for (int l = 1; l < line; l++) {
        const char *nl = memchr(in + i, '\n', len - i);
        if (!nl)
            return -1;
        i = (size_t)(nl - in) + 1;
    }
    for (int c = 1; c < column && i < len; c++) {
        i++;
        while (i < len && ((unsigned char)in[i] & 0xC0) == 0x80)
            i++;
    }
    return i < len ? (unsigned char)in[i] : -1;
}

static int parser_error(struct builder *b, yaml_parser_t *p)
{
    const char *file = b->doc->name;
    int line, col;

    switch (p->error) {
    case YAML_MEMORY_ERROR:
        cfg_err_at(b->err, file, 0, 0, "", "out of memory");
        return -ENOMEM;
    case YAML_READER_ERROR:
        locate_offset(b->input, b->len, p->problem_offset, &line, &col);
        if (p->problem_value != -1)
            return cfg_err_at(b->err, file, line, col, "", "%s (byte 0x%02x)",
                          p->problem ? p->problem : "cannot read input", p->problem_value & 0xff);
        return cfg_err_at(b->err, file, line, col, "", "%s",
                      p->problem ? p->problem : "cannot read input");
    default:
        break;
    }
    line = mark_line(p->problem_mark);
    col = mark_col(p->problem_mark);
    if (char_at(b->input, b->len, line, col) == '\t')
        return cfg_err_at(b->err, file, line, col, "",
                      "tab character where YAML expects spaces (indent with spaces only)");
    const char *problem = p->problem ? p->problem : "invalid YAML";
    if (p->context && (p->context_mark.line != p->problem_mark.line ||
                       p->context_mark.column != p->problem_mark.column))
        return cfg_err_at(b->err, file, line, col, "", "%s (%s at line %d, column %d)", problem,
                      p->context, mark_line(p->context_mark), mark_col(p->context_mark));
    if (p->context)
        return cfg_err_at(b->err, file, line, col, "", "%s (%s)", problem, p->context);
    return cfg_err_at(b->err, file, line, col, "", "%s", problem);
}

static int add_root(struct cfg_doc *doc, struct cfg_node *root)
{
    if (doc->nroots == doc->roots_cap) {
        size_t cap = doc->roots_cap ? 2 * doc->roots_cap : 4;
        struct cfg_node **r = realloc(doc->roots, cap * sizeof *r);
        if (!r)
            return -ENOMEM;
        doc->roots = r;
        doc->roots_cap = cap;
    }
    doc->roots[doc->nroots++] = root;
    return 0;
}

/* One event into the tree. 1 at the end of the stream, 0 to go on, <0 on error. */
static int on_event(struct builder *b, yaml_event_t *ev)
{
    struct cfg_doc *doc = b->doc;
    int line = mark_line(ev->start_mark), col = mark_col(ev->start_mark);
    struct cfg_node *n;
    char tag[64];

    switch (ev->type) {
    case YAML_STREAM_END_EVENT:
        return 1;
    case YAML_DOCUMENT_START_EVENT:
        b->root = NULL;
        return 0;
    case YAML_DOCUMENT_END_EVENT:
        if (b->root && add_root(doc, b->root) < 0)
            return cfg_err_at(b->err, doc->name, line, col, "", "out of memory"), -ENOMEM;
        b->root = NULL;
        return 0;
    case YAML_ALIAS_EVENT:
        return cfg_err_at(b->err, doc->name, line, col, "",
                      "aliases (*%.60s) are not supported; write the value out in full",
                      (const char *)ev->data.alias.anchor);
    case YAML_SCALAR_EVENT: {
        bool is_str_tag = false;
        if (ev->data.scalar.tag) {
            is_str_tag = strcmp((const char *)ev->data.scalar.tag, YAML_STR_TAG) == 0;
            if (!is_str_tag) {
                tag_shown(ev->data.scalar.tag, tag, sizeof tag);
                return cfg_err_at(b->err, doc->name, line, col, "", "YAML tag %s is not supported",
                              tag);
            }
        }
        if (ev->data.scalar.length > CFG_MAX_SCALAR)
            return cfg_err_at(b->err, doc->name, line, col, "", "scalar longer than %u bytes",
                          CFG_MAX_SCALAR);
        struct str text = str_make((const char *)ev->data.scalar.value, ev->data.scalar.length);
        bool is_plain = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE && !is_str_tag;
        enum cfg_kind kind = is_plain && cfg_resolve_plain(text) == PLAIN_NULL ? CFG_NULL : CFG_SCALAR;
        if (!(n = node_new(doc, kind, doc->name, line, col)))
            return node_fail(doc, b->err, doc->name, line, col);
        n->is_quoted = !is_plain;
        n->len = text.n;
        if (!(n->text = arena_strdup(&doc->arena, text)))
            return cfg_err_at(b->err, doc->name, line, col, "", "out of memory"), -ENOMEM;
        return attach(b, n);
    }
    case YAML_SEQUENCE_START_EVENT:
    case YAML_MAPPING_START_EVENT: {
        bool is_map = ev->type == YAML_MAPPING_START_EVENT;
        const yaml_char_t *t = is_map ? ev->data.mapping_start.tag : ev->data.sequence_start.tag;
        if (t && strcmp((const char *)t, is_map ? YAML_MAP_TAG : YAML_SEQ_TAG) != 0) {
            tag_shown(t, tag, sizeof tag);
            return cfg_err_at(b->err, doc->name, line, col, "", "YAML tag %s is not supported", tag);
        }
        if (b->depth >= CFG_MAX_DEPTH)
            return cfg_err_at(b->err, doc->name, line, col, "", "nesting deeper than %d levels",
                          CFG_MAX_DEPTH);
        if (!(n = node_new(doc, is_map ? CFG_MAP : CFG_SEQ, doc->name, line, col)))
            return node_fail(doc, b->err, doc->name, line, col);
        int rc = attach(b, n);
        if (rc)
            return rc;
        b->stack[b->depth++] = (struct frame){ .node = n };
        return 0;
    }
    case YAML_SEQUENCE_END_EVENT:
    case YAML_MAPPING_END_EVENT:
        return b->depth > 0 ? close_collection(b) : 0;
    default:
        return 0;
    }
}

void cfg_doc_free(struct cfg_doc *doc)
{
    if (!doc)
        return;
    free(doc->roots);
    arena_free(&doc->arena);
    free(doc);
}

int cfg_load_string(const char *name, const char *text, size_t len, struct cfg_doc **out,
                    struct cfg_error *err)
{
    struct builder b = { .input = text, .len = len, .err = err };
    yaml_parser_t parser;
    yaml_event_t ev;
    int rc = 0;

    *out = NULL;
    if (!name)
        name = "<string>";
    if (len > CFG_MAX_FILE)
        return cfg_err_at(err, name, 0, 0, "", "file is larger than %u MiB", CFG_MAX_FILE >> 20),
               -EFBIG;
    if (!text && len)
        return cfg_err_at(err, name, 0, 0, "", "no input");
    struct cfg_doc *doc = calloc(1, sizeof *doc);
    if (!doc)
        return cfg_err_at(err, name, 0, 0, "", "out of memory"), -ENOMEM;
    /* 64 KiB chunks: a typical manifest's tree fits in one or two. */
    arena_init(&doc->arena, 64 << 10, 0);
    b.doc = doc;
    if (!(doc->name = arena_strdup(&doc->arena, str_from_cstr(name)))) {
        free(doc);
        return cfg_err_at(err, name, 0, 0, "", "out of memory"), -ENOMEM;
    }
    if (!yaml_parser_initialize(&parser)) {
        cfg_doc_free(doc);
        return cfg_err_at(err, name, 0, 0, "", "out of memory"), -ENOMEM;
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)(text ? text : ""), len);
    while (rc == 0) {
        if (!yaml_parser_parse(&parser, &ev)) {
            rc = parser_error(&b, &parser);
            break;
        }
        rc = on_event(&b, &ev);
        yaml_event_delete(&ev);
    }
    if (rc == 1)
        rc = 0;
    yaml_parser_delete(&parser);
    while (b.depth > 0)
        free(b.stack[--b.depth].kids);
    if (rc) {
        cfg_doc_free(doc);
        return rc;
    }
    *out = doc;
    return 0;
}

int cfg_load_file(const char *path, struct cfg_doc **out, struct cfg_error *err)
{
    char *data = NULL;
    size_t len = 0, cap = 0;
    int rc, fd;

    *out = NULL;
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        rc = -errno;
        cfg_err_at(err, path, 0, 0, "", "cannot open: %s", strerror(-rc));
        return rc;
    }
    struct stat st;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > (off_t)CFG_MAX_FILE) {
        rc = -EFBIG;
        cfg_err_at(err, path, 0, 0, "", "file is larger than %u MiB", CFG_MAX_FILE >> 20);
        goto out;
    }
    /* Read to EOF rather than trusting st_size: pipes and /proc have none,
     * and a file may grow while we read it. One byte past the bound tells. */
    for (;;) {
        if (len == cap) {
            size_t ncap = cap ? 2 * cap : 64 << 10;
            if (ncap > CFG_MAX_FILE + 1)
                ncap = CFG_MAX_FILE + 1;
            if (ncap == cap) {
                rc = -EFBIG;
                cfg_err_at(err, path, 0, 0, "", "file is larger than %u MiB", CFG_MAX_FILE >> 20);
                goto out;
            }
            char *p = realloc(data, ncap);
            if (!p) {
                rc = -ENOMEM;
                cfg_err_at(err, path, 0, 0, "", "out of memory");
                goto out;
            }
            data = p;
            cap = ncap;
        }
        ssize_t r = read(fd, data + len, cap - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            rc = -errno;
            cfg_err_at(err, path, 0, 0, "", "cannot read: %s", strerror(-rc));
            goto out;
        }
        if (r == 0)
            break;
        len += (size_t)r;
    }
    rc = cfg_load_string(path, data ? data : "", len, out, err);
out:
    free(data);
    close(fd);
    return rc;
}

size_t cfg_doc_count(const struct cfg_doc *doc) { return doc ? doc->nroots : 0; }

struct cfg_node *cfg_doc_root(const struct cfg_doc *doc, size_t i)
{
    return doc && i < doc->nroots ? doc->roots[i] : NULL;
}

/* ---- environment overrides -------------------------------------------- */

/* Appends key → value to map (arrays are exact-size: copy into a new one). */
static int map_append(struct cfg_node *map, struct cfg_node *key, struct cfg_node *value)
{
    struct cfg_node **kids = arena_alloc(&map->doc->arena, 2 * (map->n + 1) * sizeof *kids);
    if (!kids)
        return -ENOMEM;
    if (map->n)
        memcpy(kids, map->kids, 2 * map->n * sizeof *kids);
    kids[2 * map->n] = key;
    kids[2 * map->n + 1] = value;
    key->parent = value->parent = map;
    key->name = key;
    value->name = key;
    key->index = value->index = map->n;
    map->kids = kids;
    map->n++;
    return 0;
}

static struct cfg_node *map_find_nocase(const struct cfg_node *map, const char *key, size_t kl)
{
    for (size_t i = 0; i < map->n; i++) {
        struct cfg_node *k = map->kids[2 * i];
        if (k->len == kl && strncasecmp(k->text, key, kl) == 0 && !memchr(k->text, '\0', kl))
            return map->kids[2 * i + 1];
    }
    return NULL;
}

static void become_map(struct cfg_node *n)
{
    n->kind = CFG_MAP;
    n->kids = NULL;
    n->n = 0;
}

static int set_env_text(struct cfg_node *n, const char *value, const char *file)
{
    n->len = strlen(value);
    if (!(n->text = arena_strdup(&n->doc->arena, str_make(value, n->len))))
        return -ENOMEM;
    n->kind = CFG_SCALAR;
    n->is_quoted = false;
    n->is_env = true;
    n->kids = NULL;
    n->n = 0;
    n->file = file;
    n->line = n->column = 0;
    return 0;
}

/* One NAME=VALUE; name[plen..nlen) is the path. */
static int apply_one(struct cfg_node *root, const char *name, size_t nlen, size_t plen,
                     const char *value, struct cfg_error *err)
{
    struct cfg_doc *doc = root->doc;
    char field[sizeof err->field];
    size_t fl = 0;
    int depth = 0;

    /* "env STRATA_SERVER__LISTEN" is the file of everything this variable sets. */
    char *file = arena_alloc(&doc->arena, nlen + 5);
    if (!file)
        return cfg_err_at(err, "env", 0, 0, "", "out of memory"), -ENOMEM;
    memcpy(file, "env ", 4);
    memcpy(file + 4, name, nlen);
    file[nlen + 4] = '\0';

    /* The target's path, lower-cased with "__" → ".", names it in errors. */
    for (size_t i = plen; i < nlen && fl < sizeof field - 1; i++) {
        if (name[i] == '_' && i + 1 < nlen && name[i + 1] == '_') {
            field[fl++] = '.';
            i++;
        } else {
            field[fl++] = str_lower_ascii(name[i]);
        }
    }
    field[fl] = '\0';

    if (strlen(value) > CFG_MAX_SCALAR)
        return cfg_err_at(err, file, 0, 0, field, "value longer than %u bytes", CFG_MAX_SCALAR);
    if (root->kind == CFG_NULL)
        become_map(root);
    if (root->kind != CFG_MAP)
        return cfg_err_at(err, file, 0, 0, field,
                      "the document root is a %s; environment overrides need a mapping",
                      cfg_kind_name(root->kind));

    struct cfg_node *cur = root;
    const char *p = name + plen, *end = name + nlen;
    for (;;) {
        const char *sep = memmem(p, (size_t)(end - p), "__", 2);
        const char *seg_end = sep ? sep : end;
        size_t sl = (size_t)(seg_end - p);
        bool is_last = !sep;
        struct cfg_node *next;
        char here[sizeof err->field];

        if (sl == 0)
            return cfg_err_at(err, file, 0, 0, field, "empty key in the variable name "
                          "(\"__\" at the start or end, or doubled)");
        if (++depth > CFG_MAX_DEPTH)
            return cfg_err_at(err, file, 0, 0, field, "nesting deeper than %d levels", CFG_MAX_DEPTH);
        cfg_path(cur, here, sizeof here);
        if (cur->kind == CFG_SEQ) {
            int64_t idx;
            if (!cfg_all_digits(p, sl, 10) || cfg_parse_int(str_make(p, sl), &idx) < 0)
                return cfg_err_at(err, file, 0, 0, field,
                              "%s is a sequence: expected an item number, got \"%.*s\"", here,
                              (int)(sl < 40 ? sl : 40), p);
            if ((uint64_t)idx >= cur->n)
                return cfg_err_at(err, file, 0, 0, field,
                              "%s has %zu item%s; there is no item %" PRId64, here, cur->n,
                              cur->n == 1 ? "" : "s", idx);
            next = cur->kids[idx];
        } else if (!(next = map_find_nocase(cur, p, sl))) {
            if (doc->nodes + 2 > CFG_MAX_NODES)
                return cfg_err_at(err, file, 0, 0, field, "more than %d nodes", CFG_MAX_NODES);
            struct cfg_node *k = node_new(doc, CFG_SCALAR, file, 0, 0);
            struct cfg_node *v = node_new(doc, is_last ? CFG_SCALAR : CFG_MAP, file, 0, 0);
            char *kt = arena_strdup(&doc->arena, str_make(p, sl));
            if (!k || !v || !kt)
                return cfg_err_at(err, file, 0, 0, field, "out of memory"), -ENOMEM;
            for (size_t i = 0; i < sl; i++)
                kt[i] = str_lower_ascii(kt[i]);
            k->text = kt;
            k->len = sl;
            k->is_env = true;
            if (map_append(cur, k, v) < 0 || (is_last && set_env_text(v, value, file) < 0))
                return cfg_err_at(err, file, 0, 0, field, "out of memory"), -ENOMEM;
            if (is_last)
                return 0;
            cur = v;
            p = sep + 2;
            continue;
        }
        bool is_collection = next->kind == CFG_MAP || next->kind == CFG_SEQ;
        if (is_last ? is_collection : next->kind == CFG_SCALAR) {
            cfg_path(next, here, sizeof here);
            return cfg_err_at(err, file, 0, 0, field,
                          "%.100s is a %s at %.100s:%d:%d; cannot %s it from the environment",
                          here, cfg_kind_name(next->kind), next->file, next->line, next->column,
                          is_last ? "replace" : "set keys under");
        }
        if (is_last) {
            if (set_env_text(next, value, file) < 0)
                return cfg_err_at(err, file, 0, 0, field, "out of memory"), -ENOMEM;
            return 0;
        }
        if (next->kind == CFG_NULL)
            become_map(next);
        cur = next;
        p = sep + 2;
    }
}

int cfg_apply_env(struct cfg_node *root, const char *prefix, char *const *envp,
                  struct cfg_error *err)
{
    if (!root || !prefix)
        return cfg_err_at(err, "env", 0, 0, "", "no document to apply the environment to");
    if (!envp)
        envp = environ;
    size_t plen = strlen(prefix);
    for (; *envp; envp++) {
        const char *e = *envp;
        const char *eq = strchr(e, '=');
        if (!eq || (size_t)(eq - e) <= plen || strncmp(e, prefix, plen) != 0)
            continue;
        int rc = apply_one(root, e, (size_t)(eq - e), plen, eq + 1, err);
        if (rc)
            return rc;
    }
    return 0;
}
