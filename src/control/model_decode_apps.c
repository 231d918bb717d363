/* model_decode_apps.c — the workload kinds: Deployment (containers, env,
 * probes, volumes, the template hash), Service, ConfigMap, Secret. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "control/model_internal.h"

/* ---- small parsers -------------------------------------------------------- */

/* "name:tag" with an optional registry host (with a port) and path: the tag
 * is after the last ':' that follows the last '/'. Digests are refused: the
 * local image store is keyed by name and tag. */
static bool is_image_ref(const char *s)
{
    const char *slash = strrchr(s, '/');
    const char *colon = strrchr(slash ? slash : s, ':');
    if (!colon || colon == s || (slash && colon == slash + 1) || !colon[1] || strchr(s, '@'))
        return false;
    if (strlen(colon + 1) > 128)
        return false;
    for (const char *p = s; p < colon; p++) {
        bool ok = (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '.' || *p == '_' || *p == '-' ||
                  *p == '/' || (*p == ':' && p < slash);
        if (!ok)
            return false;
    }
    for (const char *p = colon + 1; *p; p++) {
        bool ok = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
                  *p == '.' || *p == '_' || *p == '-';
        if (!ok)
            return false;
    }
    return true;
}

/* A Kubernetes quantity in thousandths: "250m" → 250, "0.5" → 500, "2" →
 * 2000, "1k" → 1000000. At most three decimals. -1 when malformed. */
static int64_t parse_milli(struct str s)
{
    int64_t whole = 0, frac = 0, scale = 1000;
    size_t i = 0;
    int fdigits = 0;
    if (s.n == 0 || s.n > 20)
        return -1;
    for (; i < s.n && s.p[i] >= '0' && s.p[i] <= '9'; i++)
        whole = whole * 10 + (s.p[i] - '0');
    if (i == 0)
        return -1;
    if (i < s.n && s.p[i] == '.') {
        for (i++; i < s.n && s.p[i] >= '0' && s.p[i] <= '9'; i++) {
            if (++fdigits > 3)
                return -1;
            frac = frac * 10 + (s.p[i] - '0');
        }
        if (fdigits == 0)
            return -1;
    }
    for (int d = fdigits; d < 3; d++)
        frac *= 10;
    if (i < s.n) {
        if (i + 1 != s.n)
            return -1;
        switch (s.p[i]) {
        case 'm': scale = 1; frac = 0; if (fdigits) return -1; break;
        case 'k': scale = 1000000; break;
        case 'M': scale = 1000000000; break;
        default: return -1;
        }
    }
    if (scale == 1)
        return whole;
    if (whole > INT64_MAX / scale / 2)
        return -1;
    return whole * scale + frac * (scale / 1000);
}

int model_quantity_milli(struct mctx *c, const struct cfg_node *map, const char *key, int64_t *out)
{
    const struct cfg_node *v = dget(c, map, key);
    if (!v || cfg_kind(v) == CFG_NULL)
        return 0;
    int64_t q = cfg_kind(v) == CFG_SCALAR ? parse_milli(cfg_scalar(v)) : -1;
    if (q < 0) {
        struct str s = cfg_scalar(v);
        model_err(c, v, "expected a quantity such as 250m, 0.5 or 2, got \"%.*s\"", (int)(s.n > 40 ? 40 : s.n),
                  s.p ? s.p : "");
        return -1;
    }
    *out = q;
    return 1;
}

/* ---- template hash -------------------------------------------------------- */

#define FNV_OFFSET 0xcbf29ce484222325ULL
#define FNV_PRIME 0x100000001b3ULL

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * FNV_PRIME;
    return h;
}

static uint64_t fnv_str(uint64_t h, char tag, struct str s)
{
    uint64_t n = s.n;
    h = fnv(h, &tag, 1);
    h = fnv(h, &n, sizeof n);
    return fnv(h, s.p, s.n);
}

static int cmp_entries(const void *a, const void *b, void *map)
{
    struct str ka = cfg_scalar(cfg_map_key(map, *(const size_t *)a));
    struct str kb = cfg_scalar(cfg_map_key(map, *(const size_t *)b));
    int r = memcmp(ka.p, kb.p, ka.n < kb.n ? ka.n : kb.n);
    return r ? r : (ka.n < kb.n ? -1 : ka.n > kb.n);
}

/* The canonical form: maps with their keys sorted, scalars with their
 * style (quoted or plain: "8080" and 8080 differ), lengths before bytes. */
static uint64_t hash_node(struct mctx *c, uint64_t h, const struct cfg_node *n)
{
    switch (cfg_kind(n)) {
    case CFG_NULL:
        return fnv(h, "n", 1);
    case CFG_SCALAR:
        return fnv_str(h, cfg_is_quoted(n) ? 'q' : 'p', cfg_scalar(n));
    case CFG_SEQ:
        h = fnv(h, "[", 1);
        for (size_t i = 0; i < cfg_count(n); i++)
            h = hash_node(c, h, cfg_seq_item(n, i));
        return fnv(h, "]", 1);
    case CFG_MAP: {
        size_t cnt = cfg_count(n);
        size_t *order = malloc((cnt ? cnt : 1) * sizeof *order);
        if (!order) {
            c->oom = true;
            return h;
        }
        for (size_t i = 0; i < cnt; i++)
            order[i] = i;
        qsort_r(order, cnt, sizeof *order, cmp_entries, (void *)n);
        h = fnv(h, "{", 1);
        for (size_t i = 0; i < cnt; i++) {
            h = fnv_str(h, 'k', cfg_scalar(cfg_map_key(n, order[i])));
            h = hash_node(c, h, cfg_map_value(n, order[i]));
        }
        free(order);
        return fnv(h, "}", 1);
    }
    }
    return h;
}

/* ---- containers ----------------------------------------------------------- */

static int resolve_port(struct mctx *c, const struct cfg_node *v, const struct model_container *ct,
                        const char *const *names, int *out)
{
    struct cfg_error e;
    int64_t p;
    const char *s;
    if (cfg_as_int(v, 1, 65535, &p, &e) == 0) {
        *out = (int)p;
        return 0;
    }
    if (cfg_kind(v) != CFG_SCALAR || (!cfg_is_quoted(v) && cfg_as_string(v, &s, &e) < 0)) {
        model_err_cfg(c, &e);
        return -1;
    }
    s = cfg_scalar(v).p;
    for (size_t i = 0; i < ct->nports; i++)
        if (names[i] && strcmp(names[i], s) == 0) {
            *out = ct->ports[i];
            return 0;
        }
    model_err(c, v, "no containerPort named \"%.60s\" in container \"%s\"", s, ct->name ? ct->name : "");
    return -1;
}

/* names: the container's port names, parallel to ct->ports (for httpGet.port: http). */
static void decode_probe(struct mctx *c, const struct cfg_node *ctn, const char *key, struct model_container *ct,
                         const char *const *names, struct model_probe *p)
{
    const struct cfg_node *pr = dmap(c, ctn, key);
    *p = (struct model_probe){ .path = "/", .period_s = 10, .timeout_s = 1, .success_threshold = 1,
                               .failure_threshold = 3 };
    if (!pr)
        return;
    dint(c, pr, "initialDelaySeconds", 0, 3600, &p->initial_delay_s);
    dint(c, pr, "periodSeconds", 1, 3600, &p->period_s);
    dint(c, pr, "timeoutSeconds", 1, 3600, &p->timeout_s);
    dint(c, pr, "successThreshold", 1, 1000, &p->success_threshold);
    dint(c, pr, "failureThreshold", 1, 1000, &p->failure_threshold);
    const struct cfg_node *hg = dmap(c, pr, "httpGet");
    if (!hg)
        return; /* exec, tcpSocket, grpc: warned about as not implemented */
    p->set = true;
    if (dstr(c, hg, "path", &p->path) == 1 && p->path[0] != '/')
        model_err(c, cfg_map_get(hg, "path"), "must start with '/'");
    const char *scheme = NULL;
    if (dstr(c, hg, "scheme", &scheme) == 1 && strcmp(scheme, "HTTP") != 0)
        model_err(c, cfg_map_get(hg, "scheme"), "only HTTP probes are supported, got \"%.20s\"", scheme);
    const struct cfg_node *port = dneed(c, hg, "port");
    if (port)
        resolve_port(c, port, ct, names, &p->port);
}

static void decode_env(struct mctx *c, const struct cfg_node *ctn, struct model_container *ct)
{
    const struct cfg_node *seq = dseq(c, ctn, "env");
    if (!seq)
        return;
    ct->env = model_alloc(c, cfg_count(seq) * sizeof *ct->env);
    for (size_t i = 0; ct->env && i < cfg_count(seq); i++) {
        const struct cfg_node *it = cfg_seq_item(seq, i);
        struct model_env *ev = &ct->env[ct->nenv];
        memset(ev, 0, sizeof *ev);
        if (cfg_kind(it) != CFG_MAP) {
            model_err(c, it, "expected a mapping, got a %s", cfg_kind_name(cfg_kind(it)));
            continue;
        }
        model_set_loc(&ev->loc, it);
        dstr_need(c, it, "name", &ev->name);
        int hv = dstr(c, it, "value", &ev->value);
        const struct cfg_node *vf = dmap(c, it, "valueFrom");
        if (hv == 1 && vf) {
            model_err(c, vf, "value and valueFrom are exclusive");
            continue;
        }
        if (hv == 0 && !cfg_map_get(it, "valueFrom") && !cfg_map_get(it, "value"))
            ev->value = ""; /* Kubernetes: a variable without value is empty */
        if (vf) {
            const struct cfg_node *sk = dmap(c, vf, "secretKeyRef");
            const struct cfg_node *ck = dmap(c, vf, "configMapKeyRef");
            const struct cfg_node *ref = sk ? sk : ck;
            if (sk && ck) {
                model_err(c, vf, "secretKeyRef and configMapKeyRef are exclusive");
                continue;
            }
            if (!ref)
                continue; /* fieldRef, resourceFieldRef: warned about, the variable is left out */
            dstr_need(c, ref, "name", sk ? &ev->secret_name : &ev->configmap_name);
            dstr_need(c, ref, "key", &ev->key);
            dbool(c, ref, "optional", &ev->optional);
        }
        if (!ev->value && !ev->secret_name && !ev->configmap_name)
            continue;
        if (ev->name)
            ct->nenv++;
    }
}

static void decode_ports(struct mctx *c, const struct cfg_node *ctn, struct model_container *ct,
                         const char ***names)
{
    const struct cfg_node *seq = dseq(c, ctn, "ports");
    *names = NULL;
    if (!seq)
        return;
    ct->ports = model_alloc(c, cfg_count(seq) * sizeof *ct->ports);
    *names = model_alloc(c, cfg_count(seq) * sizeof **names);
    for (size_t i = 0; ct->ports && *names && i < cfg_count(seq); i++) {
        const struct cfg_node *it = cfg_seq_item(seq, i);
        if (cfg_kind(it) != CFG_MAP) {
            model_err(c, it, "expected a mapping, got a %s", cfg_kind_name(cfg_kind(it)));
            continue;
        }
        int port = 0;
        const char *proto = NULL;
        if (!dneed(c, it, "containerPort") || dint(c, it, "containerPort", 1, 65535, &port) < 0)
            continue;
        dstr(c, it, "name", &(*names)[ct->nports]);
        if (dstr(c, it, "protocol", &proto) == 1 && strcmp(proto, "TCP") != 0)
            model_err(c, cfg_map_get(it, "protocol"), "only TCP is supported, got \"%.20s\"", proto);
        ct->ports[ct->nports++] = port;
    }
}

static void decode_resources(struct mctx *c, const struct cfg_node *ctn, struct model_container *ct)
{
    struct cfg_error e;
    const struct cfg_node *res = dmap(c, ctn, "resources");
    const struct cfg_node *req = dmap(c, res, "requests");
    const struct cfg_node *lim = dmap(c, res, "limits");
    model_quantity_milli(c, req, "cpu", &ct->cpu_request_millis);
    const struct cfg_node *mem = dget(c, lim, "memory");
    uint64_t bytes;
    if (mem && cfg_kind(mem) != CFG_NULL) {
        if (cfg_as_size(mem, 1, (uint64_t)1 << 50, &bytes, &e) < 0)
            model_err_cfg(c, &e);
        else
            ct->memory_limit_bytes = (int64_t)bytes;
    }
}

static void decode_mounts(struct mctx *c, const struct cfg_node *ctn, const struct cfg_node *podspec,
                          struct model_container *ct)
{
    const struct cfg_node *seq = dseq(c, ctn, "volumeMounts");
    const struct cfg_node *vols = cfg_map_get(podspec, "volumes");
    if (!seq)
        return;
    ct->mounts = model_alloc(c, cfg_count(seq) * sizeof *ct->mounts);
    for (size_t i = 0; ct->mounts && i < cfg_count(seq); i++) {
        const struct cfg_node *it = cfg_seq_item(seq, i);
        const char *name = NULL;
        bool ro;
        if (cfg_kind(it) != CFG_MAP) {
            model_err(c, it, "expected a mapping, got a %s", cfg_kind_name(cfg_kind(it)));
            continue;
        }
        struct model_volume_mount *mt = &ct->mounts[ct->nmounts];
        int rn = dstr_need(c, it, "name", &name);
        if (dstr_need(c, it, "mountPath", &mt->mount_path) == 1 && mt->mount_path[0] != '/')
            model_err(c, cfg_map_get(it, "mountPath"), "must be an absolute path");
        dbool(c, it, "readOnly", &ro);
        if (rn != 1)
            continue;
        const struct cfg_node *vol = NULL;
        for (size_t v = 0; v < cfg_count(vols); v++) {
            const struct cfg_node *nm = cfg_map_get(cfg_seq_item(vols, v), "name");
            if (nm && cfg_kind(nm) == CFG_SCALAR && strcmp(cfg_scalar(nm).p, name) == 0)
                vol = cfg_seq_item(vols, v);
        }
        if (!vol) {
            model_err(c, cfg_map_get(it, "name"), "no volume named \"%.60s\" in spec.template.spec.volumes", name);
            continue;
        }
        const struct cfg_node *sec = cfg_map_get(vol, "secret"), *cm = cfg_map_get(vol, "configMap");
        mt->secret_name = sec ? scalar_or_null(cfg_map_get(sec, "secretName")) : NULL;
        mt->configmap_name = cm ? scalar_or_null(cfg_map_get(cm, "name")) : NULL;
        ct->nmounts++;
    }
}

static void decode_volumes(struct mctx *c, const struct cfg_node *podspec)
{
    const struct cfg_node *seq = dseq(c, podspec, "volumes");
    for (size_t i = 0; i < cfg_count(seq); i++) {
        const struct cfg_node *it = cfg_seq_item(seq, i);
        const char *s;
        bool b;
        if (cfg_kind(it) != CFG_MAP) {
            model_err(c, it, "expected a mapping, got a %s", cfg_kind_name(cfg_kind(it)));
            continue;
        }
        dstr_need(c, it, "name", &s);
        const struct cfg_node *sec = dmap(c, it, "secret"), *cm = dmap(c, it, "configMap");
        if (sec) {
            dstr_need(c, sec, "secretName", &s);
            dbool(c, sec, "optional", &b);
        }
        if (cm) {
            dstr_need(c, cm, "name", &s);
            dbool(c, cm, "optional", &b);
        }
        for (size_t j = 0; j < i; j++) {
            const struct cfg_node *a = cfg_map_get(cfg_seq_item(seq, j), "name"), *b2 = cfg_map_get(it, "name");
            if (a && b2 && cfg_kind(a) == CFG_SCALAR && cfg_kind(b2) == CFG_SCALAR &&
                strcmp(cfg_scalar(a).p, cfg_scalar(b2).p) == 0)
                model_err(c, b2, "duplicate volume name (first at line %d)", cfg_line(a));
        }
    }
}

static void decode_container(struct mctx *c, const struct cfg_node *ctn, const struct cfg_node *podspec,
                             struct model_container *ct)
{
    const char **names = NULL;
    if (dstr_need(c, ctn, "name", &ct->name) == 1 && !is_dns_label(ct->name))
        model_err(c, cfg_map_get(ctn, "name"), "invalid container name \"%.60s\"", ct->name);
    if (dstr_need(c, ctn, "image", &ct->image) == 1 && !is_image_ref(ct->image))
        model_err(c, cfg_map_get(ctn, "image"),
                  "expected an image as name:tag (e.g. strata/order-svc:dev), got \"%.80s\"", ct->image);
    dstrs(c, ctn, "command", &ct->command, &ct->ncommand);
    dstrs(c, ctn, "args", &ct->args, &ct->nargs);
    decode_ports(c, ctn, ct, &names);
    decode_env(c, ctn, ct);
    decode_probe(c, ctn, "startupProbe", ct, names, &ct->startup);
    decode_probe(c, ctn, "readinessProbe", ct, names, &ct->readiness);
    decode_probe(c, ctn, "livenessProbe", ct, names, &ct->liveness);
    decode_resources(c, ctn, ct);
    decode_mounts(c, ctn, podspec, ct);
}

static void decode_containers(struct mctx *c, const struct cfg_node *podspec, struct model_deployment *d)
{
    const struct cfg_node *seq = dneed(c, podspec, "containers");
    if (!seq)
        return;
    if (cfg_kind(seq) != CFG_SEQ || cfg_count(seq) == 0) {
        model_err(c, seq, cfg_kind(seq) != CFG_SEQ ? "expected a sequence of containers" : "needs at least one container");
        return;
    }
    d->containers = model_alloc(c, cfg_count(seq) * sizeof *d->containers);
    for (size_t i = 0; d->containers && i < cfg_count(seq); i++) {
        const struct cfg_node *it = cfg_seq_item(seq, i);
        if (cfg_kind(it) != CFG_MAP) {
            model_err(c, it, "expected a mapping, got a %s", cfg_kind_name(cfg_kind(it)));
            continue;
        }
        decode_container(c, it, podspec, &d->containers[d->ncontainers++]);
        for (size_t j = 0; j + 1 < d->ncontainers; j++)
            if (d->containers[j].name && d->containers[d->ncontainers - 1].name &&
                strcmp(d->containers[j].name, d->containers[d->ncontainers - 1].name) == 0)
                model_err(c, cfg_map_get(it, "name"), "duplicate container name \"%s\"", d->containers[j].name);
    }
}

/* ---- Deployment ----------------------------------------------------------- */

static void decode_strategy(struct mctx *c, const struct cfg_node *spec, struct model_deployment *d)
{
    const struct cfg_node *st = dmap(c, spec, "strategy");
    const char *type = NULL;
    d->max_surge = (struct model_intstr){ true, true, 25 };
    d->max_unavailable = (struct model_intstr){ true, true, 25 };
    if (dstr(c, st, "type", &type) == 1) {
        if (strcmp(type, "Recreate") == 0)
            model_warn(c, cfg_map_get(st, "type"), "Recreate is not implemented by strata (rolling update used)");
        else if (strcmp(type, "RollingUpdate") != 0)
            model_err(c, cfg_map_get(st, "type"), "expected RollingUpdate or Recreate, got \"%.40s\"", type);
    }
    const struct cfg_node *ru = dmap(c, st, "rollingUpdate");
    dintstr(c, ru, "maxSurge", &d->max_surge);
    dintstr(c, ru, "maxUnavailable", &d->max_unavailable);
    if (d->max_surge.value == 0 && d->max_unavailable.value == 0)
        model_err(c, ru ? ru : spec, "maxSurge and maxUnavailable cannot both be 0 (no rollout could progress)");
}

static const char *annotation(const struct model_labels *l, const char *key) { return model_label(l, key); }

int decode_deployment(struct mctx *c, const struct cfg_node *spec, struct model_deployment *d)
{
    const struct cfg_node *root = c->nroots[MK_DEPLOYMENT] ? c->roots[MK_DEPLOYMENT][c->nroots[MK_DEPLOYMENT] - 1] : NULL;
    d->replicas = 1;
    d->service_account = "default";
    d->termination_grace_s = 30;
    dint(c, spec, "replicas", 0, 1000, &d->replicas);
    dselector(c, spec, "selector", true, &d->selector);
    decode_strategy(c, spec, d);
    const struct cfg_node *tpl = dneed(c, spec, "template");
    if (!tpl)
        return -1;
    if (cfg_kind(tpl) != CFG_MAP) {
        model_err(c, tpl, "expected a mapping, got a %s", cfg_kind_name(cfg_kind(tpl)));
        return -1;
    }
    const struct cfg_node *tmd = dmap(c, tpl, "metadata");
    dlabels(c, tmd, "labels", &d->pod_labels);
    dlabels(c, tmd, "annotations", &d->pod_annotations);
    if (d->selector.n && !model_labels_match(&d->selector, &d->pod_labels))
        model_err(c, cfg_get(spec, "selector.matchLabels"),
                  "does not match the template's labels (spec.template.metadata.labels)");
    const struct cfg_node *ps = dneed(c, tpl, "spec");
    if (ps && cfg_kind(ps) != CFG_MAP) {
        model_err(c, ps, "expected a mapping, got a %s", cfg_kind_name(cfg_kind(ps)));
        ps = NULL;
    }
    if (ps) {
        dstr(c, ps, "serviceAccountName", &d->service_account);
        dint(c, ps, "terminationGracePeriodSeconds", 0, 3600, &d->termination_grace_s);
        decode_volumes(c, ps);
        decode_containers(c, ps, d);
    }
    const char *inject = annotation(&d->pod_annotations, "sidecar.istio.io/inject");
    if (!inject && root) {
        const struct cfg_node *ann = cfg_get(root, "metadata.annotations");
        for (size_t i = 0; i < cfg_count(ann); i++)
            if (strcmp(cfg_scalar(cfg_map_key(ann, i)).p, "sidecar.istio.io/inject") == 0)
                inject = scalar_or_null(cfg_map_value(ann, i));
    }
    d->is_gateway = d->ncontainers > 0 && d->containers[0].image &&
                    strncmp(d->containers[0].image, "strata/proxy:", 13) == 0;
    d->inject_sidecar = !d->is_gateway && !(inject && strcmp(inject, "false") == 0);
    snprintf(d->template_hash, sizeof d->template_hash, "%016llx",
             (unsigned long long)hash_node(c, FNV_OFFSET, tpl));
    return 0;
}

/* ---- Service -------------------------------------------------------------- */

int decode_service(struct mctx *c, const struct cfg_node *spec, struct model_service *s)
{
    const struct cfg_node *sel = cfg_map_get(spec, "selector");
    const char *type = NULL;
    if (!sel || cfg_kind(sel) == CFG_NULL)
        model_err_sub(c, sel ? sel : spec, sel ? NULL : "selector",
                      "required field is missing (strata does not support Services without a selector)");
    else if (dlabels(c, spec, "selector", &s->selector) == 1 && s->selector.n == 0)
        model_err(c, sel, "must select at least one label");
    if (dstr(c, spec, "type", &type) == 1 && strcmp(type, "ClusterIP") != 0) {
        if (strcmp(type, "NodePort") == 0 || strcmp(type, "LoadBalancer") == 0)
            model_warn(c, cfg_map_get(spec, "type"), "type %s is not implemented by strata (served as ClusterIP; "
                       "the gateway is the way in)", type);
        else
            model_err(c, cfg_map_get(spec, "type"), "expected ClusterIP, NodePort or LoadBalancer, got \"%.40s\"",
                      type);
    }
    const struct cfg_node *seq = dneed(c, spec, "ports");
    if (!seq)
        return -1;
    if (cfg_kind(seq) != CFG_SEQ || cfg_count(seq) == 0) {
        model_err(c, seq, cfg_kind(seq) != CFG_SEQ ? "expected a sequence of ports" : "needs at least one port");
        return -1;
    }
    s->ports = model_alloc(c, cfg_count(seq) * sizeof *s->ports);
    for (size_t i = 0; s->ports && i < cfg_count(seq); i++) {
        const struct cfg_node *it = cfg_seq_item(seq, i);
        struct model_service_port *p = &s->ports[s->nports];
        const char *proto = NULL;
        if (cfg_kind(it) != CFG_MAP) {
            model_err(c, it, "expected a mapping, got a %s", cfg_kind_name(cfg_kind(it)));
            continue;
        }
        dstr(c, it, "name", &p->name);
        if (!dneed(c, it, "port") || dint(c, it, "port", 1, 65535, &p->port) < 0)
            continue;
        if (dstr(c, it, "protocol", &proto) == 1 && strcmp(proto, "TCP") != 0)
            model_err(c, cfg_map_get(it, "protocol"), "only TCP is supported, got \"%.20s\"", proto);
        p->target_port = p->port;
        const struct cfg_node *tp = dget(c, it, "targetPort");
        if (tp && cfg_kind(tp) != CFG_NULL) {
            struct cfg_error e;
            int64_t v;
            if (cfg_as_int(tp, 1, 65535, &v, &e) == 0)
                p->target_port = (int)v;
            else if (cfg_kind(tp) == CFG_SCALAR && (cfg_is_quoted(tp) || cfg_as_string(tp, &p->target_port_name, &e) == 0))
                p->target_port_name = cfg_scalar(tp).p;
            else
                model_err_cfg(c, &e);
        }
        if (cfg_count(seq) > 1 && !p->name)
            model_err_sub(c, it, "name", "required when a Service has more than one port");
        s->nports++;
    }
    return 0;
}

/* ---- ConfigMap and Secret ------------------------------------------------- */

int decode_configmap(struct mctx *c, const struct cfg_node *root, struct model_configmap *cm)
{
    struct model_labels l;
    dget(c, root, "immutable");
    if (dlabels(c, root, "data", &l) == 1) {
        cm->data = l.items;
        cm->ndata = l.n;
    }
    return 0;
}

static int b64_value(char ch)
{
    if (ch >= 'A' && ch <= 'Z')
        return ch - 'A';
    if (ch >= 'a' && ch <= 'z')
        return ch - 'a' + 26;
    if (ch >= '0' && ch <= '9')
        return ch - '0' + 52;
    if (ch == '+')
        return 62;
    if (ch == '/')
        return 63;
    return -1;
}

/* Standard base64 with padding (what `kubectl create secret` writes);
 * whitespace and line breaks are skipped. NULL when malformed. */
static char *b64_decode(struct mctx *c, struct str in, size_t *outn)
{
    char *out = model_alloc(c, in.n / 4 * 3 + 4);
    uint32_t acc = 0;
    size_t n = 0, bits = 0, pad = 0, sym = 0;
    if (!out)
        return NULL;
    for (size_t i = 0; i < in.n; i++) {
        char ch = in.p[i];
        if (ch == ' ' || ch == '\n' || ch == '\r' || ch == '\t')
            continue;
        if (ch == '=') {
            pad++;
            sym++;
            continue;
        }
        int v = b64_value(ch);
        if (v < 0 || pad)
            return NULL;
        sym++;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[n++] = (char)(acc >> bits);
        }
    }
    if (sym % 4 != 0 || pad > 2)
        return NULL;
    out[n] = '\0';
    *outn = n;
    return out;
}

int decode_secret(struct mctx *c, const struct cfg_node *root, struct model_secret *s)
{
    const char *type;
    dstr(c, root, "type", &type);
    dget(c, root, "immutable");
    const struct cfg_node *data = dmap(c, root, "data"), *sd = dmap(c, root, "stringData");
    if (data)
        model_mark_opaque(c, data);
    if (sd)
        model_mark_opaque(c, sd);
    s->data = model_alloc(c, (cfg_count(data) + cfg_count(sd)) * sizeof *s->data);
    for (size_t i = 0; s->data && i < cfg_count(data); i++) {
        struct cfg_error e;
        const char *key, *text;
        size_t n = 0;
        if (cfg_as_string(cfg_map_key(data, i), &key, &e) < 0 || cfg_as_string(cfg_map_value(data, i), &text, &e) < 0) {
            model_err_cfg(c, &e);
            continue;
        }
        char *val = b64_decode(c, cfg_scalar(cfg_map_value(data, i)), &n);
        if (!val) {
            model_err(c, cfg_map_value(data, i), "invalid base64 (data values are base64; use stringData for text)");
            continue;
        }
        if (memchr(val, '\0', n)) {
            model_err(c, cfg_map_value(data, i), "binary values with NUL bytes are not supported");
            continue;
        }
        s->data[s->ndata++] = (struct model_kv){ key, val };
    }
    for (size_t i = 0; s->data && i < cfg_count(sd); i++) {
        struct cfg_error e;
        struct model_kv kv;
        if (cfg_as_string(cfg_map_key(sd, i), &kv.key, &e) < 0 || cfg_as_string(cfg_map_value(sd, i), &kv.value, &e) < 0) {
            model_err_cfg(c, &e);
            continue;
        }
        size_t j = 0;
        while (j < s->ndata && strcmp(s->data[j].key, kv.key) != 0)
            j++;
        s->data[j] = kv; /* stringData wins over data, as in Kubernetes */
        if (j == s->ndata)
            s->ndata++;
    }
    return 0;
}
