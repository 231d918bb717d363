/* model_internal.h — what the model's files share: the loader (model.c),
 * the decoders (model_decode*.c) and the cross-resource checks
 * (model_validate.c). Not for other modules: they use model.h. */
#ifndef STRATA_CONTROL_MODEL_INTERNAL_H
#define STRATA_CONTROL_MODEL_INTERNAL_H

#include <stdarg.h>

#include "control/model.h"
#include "core/arena.h"
#include "core/cfg.h"

/* 5000 objects: the reference system has about 40; the cross-resource checks
 * compare pairs of objects, so the bound keeps them fast on any input. */
#define MODEL_MAX_OBJECTS 5000
/* Past 500 errors (or warnings) the rest are counted, not listed. */
#define MODEL_MAX_DIAGS 500

enum model_kind {
    MK_DEPLOYMENT,
    MK_SERVICE,
    MK_CONFIGMAP,
    MK_SECRET,
    MK_INGRESS,
    MK_VIRTUALSERVICE,
    MK_DESTINATIONRULE,
    MK_PEERAUTH,
    MK_AUTHZ,
    MK_REQUESTAUTH,
    MK_PDB,
    MK_HPA,
    MK_DATABASE,
    MK_GENERATED_SECRET,
    MK_RATELIMIT,
    MK_WAF,
    MK_COUNT
};

/* What model_free releases. */
struct model_internal {
    struct arena arena;
    struct cfg_doc **docs;
    size_t ndocs;
};

/* A set of cfg nodes (open addressing on the pointer). */
struct node_set {
    const struct cfg_node **slots;
    size_t cap, n;
};

/* One load: the model being built and what the checks need on the side. */
struct mctx {
    struct model *m;
    struct arena *arena;
    struct model_diag *diag;
    size_t nerrors_dropped, nwarnings_dropped;
    bool oom;
    bool had_error;
    struct node_set used;   /* values the decoders read: not warned about */
    struct node_set opaque; /* values read whole (labels, data): not walked */
    /* The document root of each decoded object, by kind, parallel to the
     * model's arrays (generated secrets: the root of the declaring object). */
    const struct cfg_node **roots[MK_COUNT];
    size_t nroots[MK_COUNT];
};

/* ---- diagnostics (model.c) ---------------------------------------------- */

/* An error or warning at node n ("file:line:col: path: message"). */
void model_err(struct mctx *c, const struct cfg_node *n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void model_warn(struct mctx *c, const struct cfg_node *n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* An error at n about field `sub` below it ("spec.selector" + "matchLabels"). */
void model_err_sub(struct mctx *c, const struct cfg_node *n, const char *sub, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* An error that cfg.h filled in. */
void model_err_cfg(struct mctx *c, const struct cfg_error *e);
/* A whole formatted line. */
void model_diag_add(struct mctx *c, bool is_error, const char *line);

/* ---- node bookkeeping (model.c) ----------------------------------------- */

void model_mark_used(struct mctx *c, const struct cfg_node *n);
void model_mark_opaque(struct mctx *c, const struct cfg_node *n);
/* Copies into the arena (NULL on failure, with c->oom set). */
void *model_alloc(struct mctx *c, size_t n);
char *model_strdup(struct mctx *c, const char *p, size_t n);

/* ---- decoding helpers (model_decode.c) ---------------------------------- */

/* The value of key in map (marked used), or NULL. */
const struct cfg_node *dget(struct mctx *c, const struct cfg_node *map, const char *key);
/* A mapping or nothing: an error when n is there but is not a mapping. */
const struct cfg_node *dmap(struct mctx *c, const struct cfg_node *map, const char *key);
/* Same for a sequence. */
const struct cfg_node *dseq(struct mctx *c, const struct cfg_node *map, const char *key);
/* Required variants: an error naming the missing field. */
const struct cfg_node *dneed(struct mctx *c, const struct cfg_node *map, const char *key);
/* Typed fields: 0 when absent (out untouched), 1 when set, -1 on error (reported). */
int dstr(struct mctx *c, const struct cfg_node *map, const char *key, const char **out);
int dint(struct mctx *c, const struct cfg_node *map, const char *key, int64_t min, int64_t max, int *out);
int dbool(struct mctx *c, const struct cfg_node *map, const char *key, bool *out);
int ddur_ms(struct mctx *c, const struct cfg_node *map, const char *key, int64_t min, int64_t max, int *out);
/* A required string (error when missing). */
int dstr_need(struct mctx *c, const struct cfg_node *map, const char *key, const char **out);
/* A sequence of strings. */
int dstrs(struct mctx *c, const struct cfg_node *map, const char *key, const char ***out, size_t *n);
/* A map of string → string (labels, data). */
int dlabels(struct mctx *c, const struct cfg_node *map, const char *key, struct model_labels *out);
/* selector.matchLabels under key (e.g. "selector"); required → error when missing. */
int dselector(struct mctx *c, const struct cfg_node *map, const char *key, bool required, struct model_labels *out);
/* IntOrString: a non-negative integer or "N%" (0..100). */
int dintstr(struct mctx *c, const struct cfg_node *map, const char *key, struct model_intstr *out);
/* A percentage as a number 0..100 (fractions rounded). */
int dpercent(struct mctx *c, const struct cfg_node *map, const char *key, int *out);
/* "user-svc", "user-svc.default", "user-svc.default.svc.cluster.local" → "user-svc". */
const char *model_short_host(struct mctx *c, const char *host);
/* A Kubernetes quantity in thousandths ("250m", "0.5", "2", "1k"). */
int model_quantity_milli(struct mctx *c, const struct cfg_node *map, const char *key, int64_t *out);
/* The text of a scalar without NULs, else NULL (no report). */
const char *scalar_or_null(const struct cfg_node *n);
/* An RFC 1123 label: [a-z0-9-], at most 63, no '-' at either end. */
bool is_dns_label(const char *s);
void model_set_loc(struct model_loc *loc, const struct cfg_node *n);

/* Decoders per kind (root: the document, already known to be that kind). */
int decode_deployment(struct mctx *c, const struct cfg_node *spec, struct model_deployment *d);
int decode_service(struct mctx *c, const struct cfg_node *spec, struct model_service *s);
int decode_configmap(struct mctx *c, const struct cfg_node *root, struct model_configmap *cm);
int decode_secret(struct mctx *c, const struct cfg_node *root, struct model_secret *s);
int decode_ingress(struct mctx *c, const struct cfg_node *spec, struct model_ingress *in);
int decode_virtualservice(struct mctx *c, const struct cfg_node *spec, struct model_virtualservice *vs);
int decode_destinationrule(struct mctx *c, const struct cfg_node *spec, struct model_destinationrule *dr);
int decode_peerauth(struct mctx *c, const struct cfg_node *spec, struct model_peerauth *pa);
int decode_authz(struct mctx *c, const struct cfg_node *spec, struct model_authzpolicy *ap);
int decode_requestauth(struct mctx *c, const struct cfg_node *spec, struct model_requestauth *ra);
int decode_pdb(struct mctx *c, const struct cfg_node *spec, struct model_pdb *p);
int decode_hpa(struct mctx *c, const struct cfg_node *spec, struct model_hpa *h);
int decode_database(struct mctx *c, const struct cfg_node *spec, struct model_database *db);
int decode_generated_secret(struct mctx *c, const struct cfg_node *spec, struct model_generated_secret *g);
int decode_ratelimit(struct mctx *c, const struct cfg_node *spec, struct model_ratelimit *rl);
int decode_waf(struct mctx *c, const struct cfg_node *spec, struct model_waf *w);

/* Decodes every document of the loaded docs into c->m (model_decode.c). */
int model_decode_docs(struct mctx *c, struct cfg_doc *const *docs, size_t ndocs);

/* ---- cross-resource checks (model_validate.c) --------------------------- */

void model_validate(struct mctx *c);

#endif
