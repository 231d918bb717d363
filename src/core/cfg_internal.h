/* cfg_internal.h — what cfg.c (tree, getters, errors) and cfg_load.c
 * (the libyaml loader and environment overrides) share. Not for other
 * modules: they use cfg.h. */
#ifndef STRATA_CFG_INTERNAL_H
#define STRATA_CFG_INTERNAL_H

#include <stdarg.h>

#include "core/arena.h"
#include "core/cfg.h"

struct cfg_node {
    enum cfg_kind kind;
    bool is_quoted; /* scalar not written plain */
    bool is_env;    /* text from the environment: typed by the getter, not the style */
    int line, column;
    const char *file;
    struct cfg_doc *doc;
    struct cfg_node *parent;
    const struct cfg_node *name; /* the key node of a map value (a key names itself) */
    size_t index;                /* entry or item position in the parent */
    const char *text;            /* scalars and nulls: NUL-terminated */
    size_t len;
    struct cfg_node **kids; /* SEQ: n items; MAP: 2n nodes, key then value */
    size_t n;
};

struct cfg_doc {
    struct arena arena;
    const char *name;
    struct cfg_node **roots; /* malloc'd */
    size_t nroots, roots_cap;
    size_t nodes;
};

enum plain_type { PLAIN_STRING, PLAIN_NULL, PLAIN_BOOL, PLAIN_INT, PLAIN_FLOAT };

/* An error at a location: fills err, returns -EINVAL. */
int cfg_err_at(struct cfg_error *err, const char *file, int line, int column, const char *field, const char *fmt,
               ...) __attribute__((format(printf, 6, 7)));
/* An error about node n: its location, its path as the field. */
int cfg_err_node(struct cfg_error *err, const struct cfg_node *n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Cuts s to at most max bytes without splitting a UTF-8 sequence. */
size_t cfg_utf8_cut(const char *s, size_t n, size_t max);
/* The text of a scalar for a message: escaped, cut to about 40 bytes. */
const char *cfg_shown(const struct cfg_node *n, char *buf, size_t size);
/* True when p[0..n) is non-empty and all digits of base 8, 10 or 16. */
bool cfg_all_digits(const char *p, size_t n, int base);
/* A YAML 1.2 integer (decimal, 0o octal, 0x hex, sign): 0 or -EINVAL/-ERANGE. */
int cfg_parse_int(struct str s, int64_t *out);
/* YAML 1.2 core schema resolution of a plain scalar. */
enum plain_type cfg_resolve_plain(struct str s);

#endif
