/* cfg_load_string on arbitrary bytes, then a walk over every node with
 * every typed getter, path lookups and environment overrides: nothing may
 * crash, leak, or produce an error without a message or a location. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/cfg.h"

#define MUST(cond)                                                           \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__,       \
                    __LINE__, #cond);                                        \
            abort();                                                         \
        }                                                                    \
    } while (0)

static void check_error(const struct cfg_error *err)
{
    char buf[1024];
    MUST(err->message[0] != '\0');
    MUST(cfg_error_format(err, buf, sizeof buf) > 0);
}

static size_t visited;

static void visit(const struct cfg_node *n, int depth)
{
    struct cfg_error err;
    char path[512];
    int64_t i;
    uint64_t u;
    bool b;
    const char *s;

    MUST(n != NULL);
    MUST(depth <= CFG_MAX_DEPTH + 1);
    visited++;
    if (cfg_line(n) != 0)
        MUST(cfg_line(n) >= 1 && cfg_column(n) >= 1);
    cfg_path(n, path, sizeof path);
    MUST(cfg_get(n, "") == n);
    if (cfg_as_int(n, -100, 100, &i, &err) < 0)
        check_error(&err);
    if (cfg_as_bool(n, &b, &err) < 0)
        check_error(&err);
    if (cfg_as_string(n, &s, &err) < 0)
        check_error(&err);
    else
        MUST(s != NULL);
    if (cfg_as_duration_ms(n, 0, 3600000, &i, &err) < 0)
        check_error(&err);
    if (cfg_as_size(n, 0, 1 << 30, &u, &err) < 0)
        check_error(&err);

    switch (cfg_kind(n)) {
    case CFG_MAP:
        for (size_t k = 0; k < cfg_count(n); k++) {
            const struct cfg_node *key = cfg_map_key(n, k);
            MUST(cfg_kind(key) == CFG_SCALAR);
            struct str ks = cfg_scalar(key);
            /* Lookup by the key finds this entry or an earlier equal one
             * (there are none: duplicates are refused) unless the key has
             * a NUL that cuts it short. */
            if (!memchr(ks.p, '\0', ks.n))
                MUST(cfg_map_get(n, ks.p) == cfg_map_value(n, k));
            visit(key, depth + 1);
            visit(cfg_map_value(n, k), depth + 1);
        }
        break;
    case CFG_SEQ:
        for (size_t k = 0; k < cfg_count(n); k++)
            visit(cfg_seq_item(n, k), depth + 1);
        MUST(cfg_seq_item(n, cfg_count(n)) == NULL);
        break;
    default:
        MUST(cfg_scalar(n).p != NULL);
        break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const paths[] = { "spec.replicas", "metadata.name", "a.b.c", "[0]",
                                         "spec.template.spec.containers[0].image", "a[1][2]", "x.",
                                         NULL };
    static char *const env[] = { "T_A=1", "T_SPEC__REPLICAS=3", "T_A__B__C=x", "T_0__X=y",
                                 "T_METADATA__LABELS__APP=z", "T___=bad", NULL };
    struct cfg_doc *doc = NULL;
    struct cfg_error err;

    int rc = cfg_load_string("fuzz.yaml", (const char *)data, size, &doc, &err);
    if (rc) {
        MUST(doc == NULL);
        check_error(&err);
        return 0;
    }
    for (size_t d = 0; d < cfg_doc_count(doc); d++) {
        struct cfg_node *root = cfg_doc_root(doc, d);
        const struct cfg_node *found;
        visited = 0;
        visit(root, 0);
        for (const char *const *p = paths; *p; p++) {
            cfg_get(root, *p);
            if (cfg_need(root, *p, &found, &err) < 0)
                check_error(&err);
        }
        if (cfg_apply_env(root, "T_", env, &err) < 0)
            check_error(&err);
        visit(root, 0);
    }
    MUST(cfg_doc_root(doc, cfg_doc_count(doc)) == NULL);
    cfg_doc_free(doc);
    return 0;
}
