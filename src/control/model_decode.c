/* model_decode.c — typed field getters over cfg nodes that mark what they
 * read (so that the rest can be warned about), and the dispatch of each
 * document by apiVersion + kind to its decoder. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "control/model_internal.h"

/* ---- field getters -------------------------------------------------------- */

const struct cfg_node *dget(struct mctx *c, const struct cfg_node *map, const char *key)
{
    const struct cfg_node *v = cfg_map_get(map, key);
    if (v)
        model_mark_used(c, v);
    return v;
}

static const struct cfg_node *dkind(struct mctx *c, const struct cfg_node *map, const char *key,
                                    enum cfg_kind want)
{
    const struct cfg_node *v = dget(c, map, key);
    if (!v || cfg_kind(v) == CFG_NULL)
        return NULL;
    if (cfg_kind(v) != want) {
        model_err(c, v, "expected a %s, got a %s", cfg_kind_name(want), cfg_kind_name(cfg_kind(v)));
        return NULL;
    }
    return v;
}

const struct cfg_node *dmap(struct mctx *c, const struct cfg_node *map, const char *key)
{
    return dkind(c, map, key, CFG_MAP);
}

const struct cfg_node *dseq(struct mctx *c, const struct cfg_node *map, const char *key)
{
    return dkind(c, map, key, CFG_SEQ);
}

const struct cfg_node *dneed(struct mctx *c, const struct cfg_node *map, const char *key)
{
    const struct cfg_node *v = dget(c, map, key);
    if (!v || cfg_kind(v) == CFG_NULL) {
        if (map)
            model_err_sub(c, v ? v : map, v ? NULL : key, "required field is missing");
        return NULL;
    }
    return v;
}

int dstr(struct mctx *c, const struct cfg_node *map, const char *key, const char **out)
{
    struct cfg_error e;
    const struct cfg_node *v = dget(c, map, key);
    if (!v || cfg_kind(v) == CFG_NULL)
        return 0;
    if (cfg_as_string(v, out, &e) < 0) {
        model_err_cfg(c, &e);
        return -1;
    }
    return 1;
}

int dstr_need(struct mctx *c, const struct cfg_node *map, const char *key, const char **out)
{
    int rc = dstr(c, map, key, out);
    if (rc == 0 && map) {
        const struct cfg_node *v = cfg_map_get(map, key);
        model_err_sub(c, v ? v : map, v ? NULL : key, "required field is missing");
        return -1;
    }
    if (rc == 1 && (*out)[0] == '\0') {
        model_err(c, cfg_map_get(map, key), "must not be empty");
        return -1;
    }
    return rc;
}

int dint(struct mctx *c, const struct cfg_node *map, const char *key, int64_t min, int64_t max, int *out)
{
    struct cfg_error e;
    int64_t v64;
    const struct cfg_node *v = dget(c, map, key);
    if (!v || cfg_kind(v) == CFG_NULL)
        return 0;
    if (cfg_as_int(v, min, max, &v64, &e) < 0) {
        model_err_cfg(c, &e);
        return -1;
    }
    *out = (int)v64;
    return 1;
}

int dbool(struct mctx *c, const struct cfg_node *map, const char *key, bool *out)
{
    struct cfg_error e;
    const struct cfg_node *v = dget(c, map, key);
    if (!v || cfg_kind(v) == CFG_NULL)
        return 0;
    if (cfg_as_bool(v, out, &e) < 0) {
        model_err_cfg(c, &e);
        return -1;
    }
    return 1;
}

int ddur_ms(struct mctx *c, const struct cfg_node *map, const char *key, int64_t min, int64_t max, int *out)
{
    struct cfg_error e;
    int64_t ms;
    const struct cfg_node *v = dget(c, map, key);
    if (!v || cfg_kind(v) == CFG_NULL)
        return 0;
    if (cfg_as_duration_ms(v, min, max, &ms, &e) < 0) {
        model_err_cfg(c, &e);
        return -1;
    }
    *out = (int)ms;
    return 1;
}

int dstrs(struct mctx *c, const struct cfg_node *map, const char *key, const char ***out, size_t *n)
{
    struct cfg_error e;
    const struct cfg_node *seq = dseq(c, map, key);
    *out = NULL;
    *n = 0;
    if (!seq)
        return cfg_map_get(map, key) && cfg_kind(cfg_map_get(map, key)) != CFG_NULL ? -1 : 0;
    const char **items = model_alloc(c, cfg_count(seq) * sizeof *items);
    if (!items)
        return -1;
    int rc = 1;
    for (size_t i = 0; i < cfg_count(seq); i++) {
        if (cfg_as_string(cfg_seq_item(seq, i), &items[*n], &e) < 0) {
            model_err_cfg(c, &e);
            rc = -1;
            continue;
        }
        (*n)++;
    }
    *out = items;
    return rc;
}

int dlabels(struct mctx *c, const struct cfg_node *map, const char *key, struct model_labels *out)
{
    struct cfg_error e;
    const struct cfg_node *v = dmap(c, map, key);
    memset(out, 0, sizeof *out);
    if (!v)
        return cfg_map_get(map, key) && cfg_kind(cfg_map_get(map, key)) != CFG_NULL ? -1 : 0;
    model_mark_opaque(c, v);
    out->items = model_alloc(c, cfg_count(v) * sizeof *out->items);
    if (!out->items)
        return -1;
    int rc = 1;
    for (size_t i = 0; i < cfg_count(v); i++) {
        struct model_kv *kv = &out->items[out->n];
        if (cfg_as_string(cfg_map_key(v, i), &kv->key, &e) < 0 ||
            cfg_as_string(cfg_map_value(v, i), &kv->value, &e) < 0) {
            model_err_cfg(c, &e);
            rc = -1;
            continue;
        }
        out->n++;
    }
    return rc;
}

int dselector(struct mctx *c, const struct cfg_node *map, const char *key, bool required, struct model_labels *out)
{
    memset(out, 0, sizeof *out);
    const struct cfg_node *sel = required ? dneed(c, map, key) : dget(c, map, key);
    if (!sel || cfg_kind(sel) == CFG_NULL)
        return required ? -1 : 0;
    if (cfg_kind(sel) != CFG_MAP) {
        model_err(c, sel, "expected a mapping, got a %s", cfg_kind_name(cfg_kind(sel)));
        return -1;
    }
    int rc = dlabels(c, sel, "matchLabels", out);
    if (rc == 0 && required) {
        model_err_sub(c, sel, "matchLabels", "required field is missing");
        return -1;
    }
    if (rc == 1 && required && out->n == 0) {
        model_err(c, cfg_map_get(sel, "matchLabels"), "must select at least one label");
        return -1;
    }
    return rc;
}

int dintstr(struct mctx *c, const struct cfg_node *map, const char *key, struct model_intstr *out)
{
    struct cfg_error e;
    int64_t v64;
    const char *s;
    const struct cfg_node *v = dget(c, map, key);
    if (!v || cfg_kind(v) == CFG_NULL)
        return 0;
    if (cfg_as_int(v, 0, 1000000, &v64, &e) == 0) {
        *out = (struct model_intstr){ .set = true, .percent = false, .value = (int)v64 };
        return 1;
    }
    if (cfg_kind(v) == CFG_SCALAR && !cfg_is_quoted(v) && cfg_as_string(v, &s, &e) < 0) {
        model_err_cfg(c, &e); /* a plain integer out of range, or a number with a fraction */
        return -1;
    }
    size_t n = cfg_scalar(v).n;
    const char *p = cfg_scalar(v).p;
    long pct = -1;
    if (cfg_kind(v) == CFG_SCALAR && n >= 2 && n <= 4 && p[n - 1] == '%') {
        pct = 0;
        for (size_t i = 0; i + 1 < n; i++)
            pct = (p[i] >= '0' && p[i] <= '9' && pct >= 0) ? pct * 10 + (p[i] - '0') : -1;
    }
    if (pct < 0 || pct > 100) {
        char shown[64];
        snprintf(shown, sizeof shown, "%.*s", (int)(n > 40 ? 40 : n), p ? p : "");
        model_err(c, v, "expected an integer or a percentage between \"0%%\" and \"100%%\", got \"%s\"", shown);
        return -1;
    }
    *out = (struct model_intstr){ .set = true, .percent = true, .value = (int)pct };
    return 1;
}

int dpercent(struct mctx *c, const struct cfg_node *map, const char *key, int *out)
{
    const struct cfg_node *v = dget(c, map, key);
    if (!v || cfg_kind(v) == CFG_NULL)
        return 0;
    struct str s = cfg_scalar(v);
    char buf[64];
    double d = -1;
    if (cfg_kind(v) == CFG_SCALAR && !cfg_is_quoted(v) && s.n > 0 && s.n < sizeof buf) {
        memcpy(buf, s.p, s.n);
        buf[s.n] = '\0';
        char *end = NULL;
        d = strtod(buf, &end);
        if (!end || *end || buf[0] == ' ' || !isfinite(d))
            d = -1;
    }
    if (d < 0 || d > 100) {
        snprintf(buf, sizeof buf, "%.*s", (int)(s.n > 40 ? 40 : s.n), s.p ? s.p : "");
        model_err(c, v, "expected a percentage as a number between 0 and 100, got \"%s\"", buf);
        return -1;
    }
    *out = (int)lround(d);
    return 1;
}

const char *model_short_host(struct mctx *c, const char *host)
{
    static const char *const suffixes[] = { ".default.svc.cluster.local", ".default.svc", ".default" };
    size_t n = strlen(host);
    for (size_t i = 0; i < sizeof suffixes / sizeof *suffixes; i++) {
        size_t k = strlen(suffixes[i]);
        if (n > k && strcmp(host + n - k, suffixes[i]) == 0)
            return model_strdup(c, host, n - k);
    }
    return host;
}

void model_set_loc(struct model_loc *loc, const struct cfg_node *n)
{
    loc->file = cfg_file(n);
    loc->line = cfg_line(n);
    loc->column = cfg_column(n);
}

static const char *scalar_text(const struct cfg_node *n);

/* ---- kinds ---------------------------------------------------------------- */

static const char *const V_APPS[] = { "apps/v1", NULL };
static const char *const V_CORE[] = { "v1", NULL };
static const char *const V_NET[] = { "networking.k8s.io/v1", NULL };
static const char *const V_ISTIO_NET[] = { "networking.istio.io/v1", "networking.istio.io/v1beta1",
                                           "networking.istio.io/v1alpha3", NULL };
static const char *const V_ISTIO_SEC[] = { "security.istio.io/v1", "security.istio.io/v1beta1", NULL };
static const char *const V_POLICY[] = { "policy/v1", NULL };
static const char *const V_HPA[] = { "autoscaling/v2", NULL };
static const char *const V_STRATA[] = { "strata.dev/v1alpha1", NULL };

static const struct {
    const char *kind;
    const char *const *versions;
} kinds[MK_COUNT] = {
    [MK_DEPLOYMENT] = { "Deployment", V_APPS },
    [MK_SERVICE] = { "Service", V_CORE },
    [MK_CONFIGMAP] = { "ConfigMap", V_CORE },
    [MK_SECRET] = { "Secret", V_CORE },
    [MK_INGRESS] = { "Ingress", V_NET },
    [MK_VIRTUALSERVICE] = { "VirtualService", V_ISTIO_NET },
    [MK_DESTINATIONRULE] = { "DestinationRule", V_ISTIO_NET },
    [MK_PEERAUTH] = { "PeerAuthentication", V_ISTIO_SEC },
    [MK_AUTHZ] = { "AuthorizationPolicy", V_ISTIO_SEC },
    [MK_REQUESTAUTH] = { "RequestAuthentication", V_ISTIO_SEC },
    [MK_PDB] = { "PodDisruptionBudget", V_POLICY },
    [MK_HPA] = { "HorizontalPodAutoscaler", V_HPA },
    [MK_DATABASE] = { "Database", V_STRATA },
    [MK_GENERATED_SECRET] = { "GeneratedSecret", V_STRATA },
    [MK_RATELIMIT] = { "RateLimitPolicy", V_STRATA },
    [MK_WAF] = { "WafPolicy", V_STRATA },
};

bool is_dns_label(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 63 || s[0] == '-' || s[n - 1] == '-')
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-'))
            return false;
    return true;
}

const char *scalar_or_null(const struct cfg_node *n) { return scalar_text(n); }

static const char *scalar_text(const struct cfg_node *n)
{
    if (cfg_kind(n) != CFG_SCALAR)
        return NULL;
    struct str s = cfg_scalar(n);
    return memchr(s.p, '\0', s.n) ? NULL : s.p;
}

static int find_kind(const char *kind)
{
    for (int k = 0; kind && k < MK_COUNT; k++)
        if (strcmp(kinds[k].kind, kind) == 0)
            return k;
    return -1;
}

static bool has_version(int k, const char *version)
{
    for (const char *const *v = kinds[k].versions; version && *v; v++)
        if (strcmp(*v, version) == 0)
            return true;
    return false;
}

/* The kind of a document without reporting anything: -1 when unusable. */
static int classify(const struct cfg_node *root)
{
    if (cfg_kind(root) != CFG_MAP)
        return -1;
    int k = find_kind(scalar_text(cfg_map_get(root, "kind")));
    if (k < 0 || !has_version(k, scalar_text(cfg_map_get(root, "apiVersion"))))
        return -1;
    return k;
}

/* The same, reporting why a document cannot be used. */
static int classify_report(struct mctx *c, const struct cfg_node *root)
{
    const char *api = NULL, *kind = NULL;
    if (cfg_kind(root) != CFG_MAP) {
        model_err(c, root, "expected a mapping (a Kubernetes object), got a %s", cfg_kind_name(cfg_kind(root)));
        return -1;
    }
    int ra = dstr_need(c, root, "apiVersion", &api);
    int rk = dstr_need(c, root, "kind", &kind);
    if (ra < 0 || rk < 0)
        return -1;
    int k = find_kind(kind);
    if (k < 0) {
        model_err(c, cfg_map_get(root, "kind"),
                  "unknown kind \"%.60s\" (the kinds strata reads: docs/manifests.md)",
                  kind);
        return -1;
    }
    if (!has_version(k, api)) {
        char want[160] = "";
        for (const char *const *v = kinds[k].versions; *v; v++)
            snprintf(want + strlen(want), sizeof want - strlen(want), "%s%s", want[0] ? " or " : "", *v);
        model_err(c, cfg_map_get(root, "apiVersion"), "unknown apiVersion \"%.60s\" for kind %s (expected %s)",
                  api, kinds[k].kind, want);
        return -1;
    }
    return k;
}

/* An RFC 1123 subdomain: lower-case letters, digits, '-' and '.', starting
 * and ending with a letter or digit, at most 253 characters. */
static bool is_dns_name(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n == 0 || n > max)
        return false;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        bool alnum = (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9');
        if (!alnum && ((ch != '-' && ch != '.') || i == 0 || i == n - 1))
            return false;
    }
    return true;
}

struct meta {
    const char *name, *namespace;
    struct model_loc loc;
    const struct cfg_node *labels_owner;
};

static int decode_meta(struct mctx *c, const struct cfg_node *root, struct meta *mt)
{
    const struct cfg_node *md = dneed(c, root, "metadata");
    model_set_loc(&mt->loc, root);
    mt->namespace = "default";
    if (!md)
        return -1;
    if (cfg_kind(md) != CFG_MAP) {
        model_err(c, md, "expected a mapping, got a %s", cfg_kind_name(cfg_kind(md)));
        return -1;
    }
    int rc = 0;
    if (dstr_need(c, md, "name", &mt->name) < 0)
        rc = -1;
    else if (!is_dns_name(mt->name, 253)) {
        model_err(c, cfg_map_get(md, "name"),
                  "invalid name \"%.60s\": lower-case letters, digits, '-' and '.' (RFC 1123)", mt->name);
        rc = -1;
    }
    if (dstr(c, md, "namespace", &mt->namespace) < 0)
        rc = -1;
    else if (!is_dns_name(mt->namespace, 63)) {
        model_err(c, cfg_map_get(md, "namespace"), "invalid namespace \"%.60s\"", mt->namespace);
        rc = -1;
    }
    /* Object labels and annotations are read (and kept silent) whole. */
    const struct cfg_node *v = dget(c, md, "labels");
    if (v)
        model_mark_opaque(c, v);
    v = dget(c, md, "annotations");
    if (v)
        model_mark_opaque(c, v);
    return rc;
}

/* spec as a mapping: required unless the kind allows it absent. */
static const struct cfg_node *decode_spec(struct mctx *c, const struct cfg_node *root, bool required)
{
    const struct cfg_node *spec = required ? dneed(c, root, "spec") : dget(c, root, "spec");
    if (!spec || cfg_kind(spec) == CFG_NULL)
        return NULL;
    if (cfg_kind(spec) != CFG_MAP) {
        model_err(c, spec, "expected a mapping, got a %s", cfg_kind_name(cfg_kind(spec)));
        return NULL;
    }
    return spec;
}

#define SET_META(obj, mt)                                                                                   \
    do {                                                                                                    \
        (obj)->name = (mt).name;                                                                            \
        (obj)->namespace = (mt).namespace;                                                                  \
        (obj)->loc = (mt).loc;                                                                              \
    } while (0)

static void decode_one(struct mctx *c, int k, const struct cfg_node *root)
{
    struct model *m = c->m;
    struct meta mt;
    memset(&mt, 0, sizeof mt);
    bool spec_required = k != MK_CONFIGMAP && k != MK_SECRET && k != MK_PEERAUTH && k != MK_AUTHZ &&
                         k != MK_WAF;
    decode_meta(c, root, &mt);
    const struct cfg_node *spec = NULL;
    if (k != MK_CONFIGMAP && k != MK_SECRET) {
        spec = decode_spec(c, root, spec_required);
        if (spec_required && !spec)
            return;
    }
    c->roots[k][c->nroots[k]++] = root;
    switch (k) {
#define CASE(K, arr, count, fn, arg)                                                                        \
    case K: {                                                                                               \
        __typeof__(&m->arr[0]) o_ = &m->arr[m->count++];                                                    \
        SET_META(o_, mt);                                                                                   \
        fn(c, arg, o_);                                                                                     \
        break;                                                                                              \
    }
        CASE(MK_DEPLOYMENT, deployments, ndeployments, decode_deployment, spec)
        CASE(MK_SERVICE, services, nservices, decode_service, spec)
        CASE(MK_CONFIGMAP, configmaps, nconfigmaps, decode_configmap, root)
        CASE(MK_SECRET, secrets, nsecrets, decode_secret, root)
        CASE(MK_INGRESS, ingresses, ningresses, decode_ingress, spec)
        CASE(MK_VIRTUALSERVICE, virtualservices, nvirtualservices, decode_virtualservice, spec)
        CASE(MK_DESTINATIONRULE, destinationrules, ndestinationrules, decode_destinationrule, spec)
        CASE(MK_PEERAUTH, peerauths, npeerauths, decode_peerauth, spec)
        CASE(MK_AUTHZ, authzpolicies, nauthzpolicies, decode_authz, spec)
        CASE(MK_REQUESTAUTH, requestauths, nrequestauths, decode_requestauth, spec)
        CASE(MK_PDB, pdbs, npdbs, decode_pdb, spec)
        CASE(MK_HPA, hpas, nhpas, decode_hpa, spec)
        CASE(MK_DATABASE, databases, ndatabases, decode_database, spec)
        CASE(MK_GENERATED_SECRET, generated_secrets, ngenerated_secrets, decode_generated_secret, spec)
        CASE(MK_RATELIMIT, ratelimits, nratelimits, decode_ratelimit, spec)
        CASE(MK_WAF, wafs, nwafs, decode_waf, spec)
#undef CASE
    }
}

static int alloc_arrays(struct mctx *c, const size_t count[MK_COUNT])
{
    struct model *m = c->m;
    for (int k = 0; k < MK_COUNT; k++) {
        size_t n = count[k] + (k == MK_SECRET ? count[MK_DATABASE] + count[MK_GENERATED_SECRET] : 0);
        c->roots[k] = calloc(n ? n : 1, sizeof *c->roots[k]);
        if (!c->roots[k]) {
            c->oom = true;
            return -ENOMEM;
        }
    }
#define ALLOC(arr, K, extra) m->arr = model_alloc(c, (count[K] + (extra)) * sizeof *m->arr)
    ALLOC(deployments, MK_DEPLOYMENT, 0);
    ALLOC(services, MK_SERVICE, 0);
    ALLOC(configmaps, MK_CONFIGMAP, 0);
    ALLOC(secrets, MK_SECRET, count[MK_DATABASE] + count[MK_GENERATED_SECRET]);
    ALLOC(ingresses, MK_INGRESS, 0);
    ALLOC(virtualservices, MK_VIRTUALSERVICE, 0);
    ALLOC(destinationrules, MK_DESTINATIONRULE, 0);
    ALLOC(peerauths, MK_PEERAUTH, 0);
    ALLOC(authzpolicies, MK_AUTHZ, 0);
    ALLOC(requestauths, MK_REQUESTAUTH, 0);
    ALLOC(pdbs, MK_PDB, 0);
    ALLOC(hpas, MK_HPA, 0);
    ALLOC(ratelimits, MK_RATELIMIT, 0);
    ALLOC(wafs, MK_WAF, 0);
    ALLOC(databases, MK_DATABASE, 0);
    ALLOC(generated_secrets, MK_GENERATED_SECRET, 0);
#undef ALLOC
    return c->oom ? -ENOMEM : 0;
}

/* The Secret a Database or GeneratedSecret declares: its keys, empty values
 * (the values are made at run time). */
static void add_generated(struct mctx *c, const char *name, const char *ns, struct model_loc loc,
                          const char *const *keys, size_t nkeys, const struct cfg_node *root)
{
    struct model *m = c->m;
    if (!name)
        return;
    struct model_secret *s = &m->secrets[m->nsecrets++];
    s->name = name;
    s->namespace = ns;
    s->loc = loc;
    s->generated = true;
    s->data = model_alloc(c, nkeys * sizeof *s->data);
    for (size_t i = 0; s->data && i < nkeys; i++)
        s->data[s->ndata++] = (struct model_kv){ keys[i], "" };
    c->roots[MK_SECRET][c->nroots[MK_SECRET]++] = root;
}

static void add_generated_secrets(struct mctx *c)
{
    static const char *const pg_keys[] = { "url", "host", "port", "username", "password", "database" };
    static const char *const url_keys[] = { "url" };
    struct model *m = c->m;
    for (size_t i = 0; i < m->ndatabases; i++) {
        const struct model_database *db = &m->databases[i];
        bool pg = db->engine == MODEL_DB_POSTGRESQL;
        add_generated(c, db->secret_name, db->namespace, db->loc, pg ? pg_keys : url_keys, pg ? 6 : 1,
                      c->roots[MK_DATABASE][i]);
    }
    for (size_t i = 0; i < m->ngenerated_secrets; i++) {
        const struct model_generated_secret *g = &m->generated_secrets[i];
        const char **keys = model_alloc(c, g->nkeys * sizeof *keys);
        if (!keys)
            return;
        for (size_t k = 0; k < g->nkeys; k++)
            keys[k] = g->keys[k].key;
        add_generated(c, g->name, g->namespace, g->loc, keys, g->nkeys, c->roots[MK_GENERATED_SECRET][i]);
    }
}

int model_decode_docs(struct mctx *c, struct cfg_doc *const *docs, size_t ndocs)
{
    size_t count[MK_COUNT] = { 0 }, total = 0;
    for (size_t i = 0; i < ndocs; i++)
        for (size_t d = 0; d < cfg_doc_count(docs[i]); d++) {
            int k = classify(cfg_doc_root(docs[i], d));
            if (k >= 0)
                count[k]++;
            total++;
        }
    if (total > MODEL_MAX_OBJECTS) {
        model_err(c, cfg_doc_root(docs[0], 0), "too many objects: %zu (at most %d)", total, MODEL_MAX_OBJECTS);
        return -EINVAL;
    }
    if (alloc_arrays(c, count) < 0)
        return -ENOMEM;
    for (size_t i = 0; i < ndocs && !c->oom; i++)
        for (size_t d = 0; d < cfg_doc_count(docs[i]); d++) {
            const struct cfg_node *root = cfg_doc_root(docs[i], d);
            if (cfg_kind(root) == CFG_NULL)
                continue; /* an empty document ("---" at the end) */
            int k = classify_report(c, root);
            if (k < 0) {
                model_mark_opaque(c, root); /* no warnings about an object we could not read */
                continue;
            }
            decode_one(c, k, root);
        }
    add_generated_secrets(c);
    return c->oom ? -ENOMEM : 0;
}
