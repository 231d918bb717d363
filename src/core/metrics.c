#include "core/metrics.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <locale.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "core/buf.h"

/* 255 bytes of name, 4 KiB of help: far past any sensible metric, small
 * enough that the checks below never scan much. */
#define NAME_MAX_LEN 255
#define HELP_MAX_LEN 4096
/* Children are updated from several worker threads; a cache line each keeps
 * two hot children from false-sharing one line. */
#define CHILD_ALIGN 64

enum metrics_kind {
    METRICS_KIND_COUNTER,
    METRICS_KIND_GAUGE,
    METRICS_KIND_HISTOGRAM,
};

enum refusal {
    REFUSAL_LIMIT,
    REFUSAL_INVALID_VALUE,
    REFUSAL_COUNT,
};

static const char *const refusal_names[REFUSAL_COUNT] = { "limit", "invalid_value" };

struct metrics_counter {
    _Atomic uint64_t n;     /* integer part: exact */
    _Atomic uint64_t fbits; /* fractional adds, a double's bits */
};

struct metrics_gauge {
    _Atomic uint64_t bits;
};

struct metrics_histogram {
    const double *bounds; /* the family's, immutable after registration */
    size_t nbounds;
    _Atomic uint64_t sum_bits;
    _Atomic uint64_t counts[]; /* per bucket, not cumulative; [nbounds] is +Inf */
};

struct child {
    char *key;    /* label values back to back, each NUL-terminated */
    char *labels; /* rendered: a="x",b="y" (escaped); NULL without labels */
    size_t labels_len;
    void *m;      /* struct metrics_counter/gauge/histogram */
};

struct metrics_family {
    struct metrics_registry *reg;
    struct metrics_family *next;
    enum metrics_kind kind;
    char *name;
    char *help; /* escaped for # HELP */
    size_t nlabels;
    char *label_names[METRICS_MAX_LABELS];
    double *bounds;
    size_t nbounds;
    char (*le)[32]; /* bounds formatted once for le="..." */
    double (*fn)(void *arg);
    void *arg;
    size_t max_children;
    struct child *children; /* sorted by key */
    size_t nchildren, cap;
    struct metrics_counter *refused[REFUSAL_COUNT]; /* cached overflow children */
};

struct metrics_registry {
    pthread_mutex_t mu;
    struct metrics_family *head;
    struct metrics_family **tail;
    struct metrics_family *overflow; /* strata_metrics_cardinality_overflow_total */
};

static const double default_buckets[] = { .0005, .001, .0025, .005, .01, .025, .05,
                                          .1,    .25,  .5,    1,    2.5, 5,    10 };

/* ---- small helpers ------------------------------------------------------- */

static inline uint64_t d2u(double d)
{
    uint64_t u;
    memcpy(&u, &d, sizeof u);
    return u;
}

static inline double u2d(uint64_t u)
{
    double d;
    memcpy(&d, &u, sizeof d);
    return d;
}

static void atomic_add_double(_Atomic uint64_t *p, double v)
{
    uint64_t old = atomic_load_explicit(p, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(p, &old, d2u(u2d(old) + v),
                                                  memory_order_relaxed, memory_order_relaxed))
        ;
}

static bool has_suffix(const char *s, const char *suffix)
{
    return str_has_suffix(str_from_cstr(s), str_from_cstr(suffix));
}

static bool utf8_valid(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t len;
        unsigned min;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            len = 2, min = 0x80, c &= 0x1f;
        } else if ((c & 0xf0) == 0xe0) {
            len = 3, min = 0x800, c &= 0x0f;
        } else if ((c & 0xf8) == 0xf0) {
            len = 4, min = 0x10000, c &= 0x07;
        } else {
            return false;
        }
        if (n - i < len)
            return false;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return false;
            c = (c << 6) | (s[i + k] & 0x3f);
        }
        if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
            return false; /* overlong, out of range, surrogate */
        i += len;
    }
    return true;
}

/* [a-z_][a-z0-9_]*, not "__…": Prometheus' rule narrowed to lower case
 * (promtool lints camelCase) and without ':' (reserved for recording rules). */
static bool name_valid(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > NAME_MAX_LEN || (s[0] == '_' && s[1] == '_'))
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || c == '_' || (i > 0 && c >= '0' && c <= '9')))
            return false;
    }
    return true;
}

/* The C locale for number formatting: Prometheus wants "0.5" whatever
 * LC_NUMERIC the process runs under, and printf/strtod follow the thread's
 * locale. Created once, never freed. */
static locale_t c_locale;
static pthread_once_t c_locale_once = PTHREAD_ONCE_INIT;

static void c_locale_init(void) { c_locale = newlocale(LC_ALL_MASK, "C", (locale_t)0); }

/* The first of %.15g, %.16g, %.17g that reads back as the same double: 0.1
 * is "0.1", not "0.10000000000000001", and 0.1 + 0.2 keeps all 17 digits.
 * That is the shortest exact form for every normal double (15 digits always
 * survive a round trip, DBL_DIG); subnormals may get a few digits more than
 * needed, still exact. Writes a NUL-terminated string into
 * out (32 bytes: "-1.2345678901234567e-308" is 24) and returns its length. */
static size_t fmt_double(double v, char out[32])
{
    if (isnan(v))
        return (size_t)snprintf(out, 32, "NaN");
    if (isinf(v))
        return (size_t)snprintf(out, 32, v > 0 ? "+Inf" : "-Inf");
    pthread_once(&c_locale_once, c_locale_init);
    locale_t old = c_locale ? uselocale(c_locale) : (locale_t)0;
    int n = 0;
    for (int prec = 15; prec <= 17; prec++) {
        n = snprintf(out, 32, "%.*g", prec, v);
        if (strtod(out, NULL) == v)
            break;
    }
    if (old)
        uselocale(old);
    return (size_t)n;
}

/* ---- registry ------------------------------------------------------------ */

static void family_free(struct metrics_family *f)
{
    if (!f)
        return;
    for (size_t i = 0; i < f->nchildren; i++) {
        free(f->children[i].key);
        free(f->children[i].labels);
        free(f->children[i].m);
    }
    free(f->children);
    for (size_t i = 0; i < f->nlabels; i++)
        free(f->label_names[i]);
    free(f->name);
    free(f->help);
    free(f->bounds);
    free(f->le);
    free(f);
}

static int register_family(struct metrics_registry *r, enum metrics_kind kind, const char *name,
                           const char *help, const char *const *label_names,
                           const double *buckets, size_t nbuckets, double (*fn)(void *),
                           void *arg, struct metrics_family **out);

struct metrics_registry *metrics_registry_new(void)
{
    struct metrics_registry *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    if (pthread_mutex_init(&r->mu, NULL) != 0) {
        free(r);
        return NULL;
    }
    r->tail = &r->head;
    int rc = register_family(r, METRICS_KIND_COUNTER, "strata_metrics_cardinality_overflow_total",
                             "Label-value lookups refused because the metric family was at its "
                             "series limit (reason=\"limit\") or a value was not UTF-8 or too "
                             "long (reason=\"invalid_value\").",
                             METRICS_LABELS("metric", "reason"), NULL, 0, NULL, NULL,
                             &r->overflow);
    if (rc < 0) {
        metrics_registry_free(r);
        return NULL;
    }
    /* One child per family and reason at most: bounded by registration. */
    r->overflow->max_children = SIZE_MAX;
    return r;
}

void metrics_registry_free(struct metrics_registry *r)
{
    if (!r)
        return;
    struct metrics_family *f = r->head;
    while (f) {
        struct metrics_family *next = f->next;
        family_free(f);
        f = next;
    }
    pthread_mutex_destroy(&r->mu);
    free(r);
}

static pthread_mutex_t default_mu = PTHREAD_MUTEX_INITIALIZER;
static struct metrics_registry *_Atomic default_registry;

struct metrics_registry *metrics_default(void)
{
    struct metrics_registry *r = atomic_load_explicit(&default_registry, memory_order_acquire);
    if (r)
        return r;
    pthread_mutex_lock(&default_mu);
    r = atomic_load_explicit(&default_registry, memory_order_relaxed);
    if (!r) {
        r = metrics_registry_new();
        if (r && metrics_register_process(r) < 0) {
            metrics_registry_free(r);
            r = NULL;
        }
        atomic_store_explicit(&default_registry, r, memory_order_release);
    }
    pthread_mutex_unlock(&default_mu);
    return r;
}

/* ---- children ------------------------------------------------------------ */

/* Orders a lookup's values against a stored key: value by value, bytes
 * compared unsigned (strcmp), so children render sorted by label values. */
static int key_cmp(const char *const *values, size_t n, const char *key)
{
    for (size_t i = 0; i < n; i++) {
        int c = strcmp(values[i], key);
        if (c)
            return c;
        key += strlen(key) + 1;
    }
    return 0;
}

static size_t escaped_len(const char *s, const char *specials)
{
    size_t n = 0;
    for (; *s; s++)
        n += strchr(specials, *s) ? 2 : 1;
    return n;
}

/* Escapes backslash, newline and (for label values) double quote, as the
 * text format requires. Returns the end of what it wrote. */
static char *escape_into(char *dst, const char *s, const char *specials)
{
    for (; *s; s++) {
        if (!strchr(specials, *s)) {
            *dst++ = *s;
            continue;
        }
        *dst++ = '\\';
        *dst++ = *s == '\n' ? 'n' : *s;
    }
    return dst;
}

static void *metric_new(const struct metrics_family *f)
{
    size_t size;
    switch (f->kind) {
    case METRICS_KIND_COUNTER:
        size = sizeof(struct metrics_counter);
        break;
    case METRICS_KIND_GAUGE:
        size = sizeof(struct metrics_gauge);
        break;
    default:
        size = sizeof(struct metrics_histogram) + (f->nbounds + 1) * sizeof(_Atomic uint64_t);
        break;
    }
    size = (size + CHILD_ALIGN - 1) / CHILD_ALIGN * CHILD_ALIGN;
    void *m = aligned_alloc(CHILD_ALIGN, size);
    if (!m)
        return NULL;
    memset(m, 0, size);
    if (f->kind == METRICS_KIND_HISTOGRAM) {
        struct metrics_histogram *h = m;
        h->bounds = f->bounds;
        h->nbounds = f->nbounds;
    }
    return m;
}

/* Builds a child for values (validated by the caller). */
static int child_init(const struct metrics_family *f, const char *const *values,
                      struct child *c)
{
    size_t key_len = 0, labels_len = 0;
    for (size_t i = 0; i < f->nlabels; i++) {
        key_len += strlen(values[i]) + 1;
        labels_len += (i ? 1 : 0) + strlen(f->label_names[i]) + 2 +
                      escaped_len(values[i], "\\\"\n") + 1;
    }
    c->key = malloc(key_len + 1);
    c->labels = f->nlabels ? malloc(labels_len + 1) : NULL;
    c->m = metric_new(f);
    if (!c->key || (f->nlabels && !c->labels) || !c->m) {
        free(c->key);
        free(c->labels);
        free(c->m);
        return -ENOMEM;
    }
    char *k = c->key, *l = c->labels;
    for (size_t i = 0; i < f->nlabels; i++) {
        size_t n = strlen(values[i]) + 1;
        memcpy(k, values[i], n);
        k += n;
        if (i)
            *l++ = ',';
        size_t ln = strlen(f->label_names[i]);
        memcpy(l, f->label_names[i], ln);
        l += ln;
        *l++ = '=';
        *l++ = '"';
        l = escape_into(l, values[i], "\\\"\n");
        *l++ = '"';
    }
    *k = '\0';
    if (l)
        *l = '\0';
    c->labels_len = labels_len;
    return 0;
}

static void *child_get_locked(struct metrics_family *f, const char *const *values,
                              enum refusal *refused);

static void count_refusal_locked(struct metrics_family *f, enum refusal why)
{
    struct metrics_family *of = f->reg->overflow;
    if (!of)
        return; /* while the registry registers its own overflow family */
    if (!f->refused[why]) {
        const char *values[2] = { f->name, refusal_names[why] };
        enum refusal unused;
        f->refused[why] = child_get_locked(of, values, &unused);
    }
    metrics_counter_add(f->refused[why], 1);
}

/* Finds or creates the child; NULL with *refused set when the family is at
 * its bound, NULL with *refused = REFUSAL_COUNT on allocation failure. */
static void *child_get_locked(struct metrics_family *f, const char *const *values,
                              enum refusal *refused)
{
    size_t lo = 0, hi = f->nchildren;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = key_cmp(values, f->nlabels, f->children[mid].key);
        if (c == 0)
            return f->children[mid].m;
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    *refused = REFUSAL_COUNT;
    if (f->nchildren >= f->max_children) {
        *refused = REFUSAL_LIMIT;
        return NULL;
    }
    if (f->nchildren == f->cap) {
        size_t cap = f->cap ? f->cap * 2 : 8;
        struct child *p = realloc(f->children, cap * sizeof *p);
        if (!p)
            return NULL;
        f->children = p;
        f->cap = cap;
    }
    struct child c;
    if (child_init(f, values, &c) < 0)
        return NULL;
    memmove(&f->children[lo + 1], &f->children[lo], (f->nchildren - lo) * sizeof c);
    f->children[lo] = c;
    f->nchildren++;
    return c.m;
}

static void *child_lookup(struct metrics_family *f, enum metrics_kind kind,
                          const char *const *values, size_t n)
{
    if (!f || f->kind != kind || f->fn || n != f->nlabels || (n && !values))
        return NULL;
    bool is_valid = true;
    for (size_t i = 0; i < n && is_valid; i++) {
        size_t len = values[i] ? strlen(values[i]) : 0;
        is_valid = values[i] && len <= METRICS_MAX_LABEL_VALUE &&
                   utf8_valid((const unsigned char *)values[i], len);
    }
    struct metrics_registry *r = f->reg;
    pthread_mutex_lock(&r->mu);
    void *m = NULL;
    enum refusal why = REFUSAL_INVALID_VALUE;
    if (is_valid)
        m = child_get_locked(f, values, &why);
    if (!m && why != REFUSAL_COUNT)
        count_refusal_locked(f, why);
    pthread_mutex_unlock(&r->mu);
    return m;
}

struct metrics_counter *metrics_counter_withv(struct metrics_family *f, const char *const *values,
                                              size_t n)
{
    return child_lookup(f, METRICS_KIND_COUNTER, values, n);
}

struct metrics_gauge *metrics_gauge_withv(struct metrics_family *f, const char *const *values,
                                          size_t n)
{
    return child_lookup(f, METRICS_KIND_GAUGE, values, n);
}

struct metrics_histogram *metrics_histogram_withv(struct metrics_family *f,
                                                  const char *const *values, size_t n)
{
    return child_lookup(f, METRICS_KIND_HISTOGRAM, values, n);
}

int metrics_family_set_max_children(struct metrics_family *f, size_t max)
{
    if (!f || max == 0)
        return -EINVAL;
    pthread_mutex_lock(&f->reg->mu);
    f->max_children = max;
    pthread_mutex_unlock(&f->reg->mu);
    return 0;
}

/* ---- registration -------------------------------------------------------- */

/* The series names a family produces, for the collision check. */
static size_t series_names(enum metrics_kind kind, const char *name,
                           char out[4][NAME_MAX_LEN + 8])
{
    snprintf(out[0], sizeof out[0], "%s", name);
    if (kind != METRICS_KIND_HISTOGRAM)
        return 1;
    snprintf(out[1], sizeof out[1], "%s_bucket", name);
    snprintf(out[2], sizeof out[2], "%s_sum", name);
    snprintf(out[3], sizeof out[3], "%s_count", name);
    return 4;
}

static bool collides_locked(const struct metrics_registry *r, const struct metrics_family *nf)
{
    char mine[4][NAME_MAX_LEN + 8], theirs[4][NAME_MAX_LEN + 8];
    size_t nmine = series_names(nf->kind, nf->name, mine);
    for (const struct metrics_family *f = r->head; f; f = f->next) {
        size_t ntheirs = series_names(f->kind, f->name, theirs);
        for (size_t i = 0; i < nmine; i++)
            for (size_t j = 0; j < ntheirs; j++)
                if (strcmp(mine[i], theirs[j]) == 0)
                    return true;
    }
    return false;
}

static int check_names(enum metrics_kind kind, const char *name, const char *help,
                       const char *const *label_names, size_t *nlabels)
{
    if (!name || !name_valid(name) || !help)
        return -EINVAL;
    bool is_total = has_suffix(name, "_total");
    if ((kind == METRICS_KIND_COUNTER) != is_total)
        return -EINVAL;
    if (kind != METRICS_KIND_HISTOGRAM &&
        (has_suffix(name, "_bucket") || has_suffix(name, "_sum") || has_suffix(name, "_count")))
        return -EINVAL;
    size_t help_len = strlen(help);
    if (help_len == 0 || help_len > HELP_MAX_LEN ||
        !utf8_valid((const unsigned char *)help, help_len))
        return -EINVAL;
    size_t n = 0;
    for (; label_names && label_names[n]; n++) {
        const char *l = label_names[n];
        if (n == METRICS_MAX_LABELS || !name_valid(l) || strcmp(l, "le") == 0)
            return -EINVAL;
        for (size_t j = 0; j < n; j++)
            if (strcmp(label_names[j], l) == 0)
                return -EINVAL;
    }
    *nlabels = n;
    return 0;
}

static int check_buckets(const double *buckets, size_t *nbuckets)
{
    size_t n = *nbuckets;
    if (n && isinf(buckets[n - 1]) && buckets[n - 1] > 0)
        n--; /* the +Inf bucket is implicit */
    if (n > METRICS_MAX_BUCKETS)
        return -EINVAL;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(buckets[i]) || (i && !(buckets[i] > buckets[i - 1])))
            return -EINVAL;
    }
    *nbuckets = n;
    return 0;
}

static int register_family(struct metrics_registry *r, enum metrics_kind kind, const char *name,
                           const char *help, const char *const *label_names,
                           const double *buckets, size_t nbuckets, double (*fn)(void *),
                           void *arg, struct metrics_family **out)
{
    size_t nlabels = 0;
    if (!r)
        return -EINVAL;
    int rc = check_names(kind, name, help, label_names, &nlabels);
    if (rc < 0)
        return rc;
    if (kind == METRICS_KIND_HISTOGRAM) {
        if (!buckets || nbuckets == 0) {
            buckets = default_buckets;
            nbuckets = sizeof default_buckets / sizeof default_buckets[0];
        }
        rc = check_buckets(buckets, &nbuckets);
        if (rc < 0)
            return rc;
    }

    rc = -ENOMEM;
    struct metrics_family *f = calloc(1, sizeof *f);
    if (!f)
        return -ENOMEM;
    f->reg = r;
    f->kind = kind;
    f->fn = fn;
    f->arg = arg;
    f->max_children = METRICS_DEFAULT_MAX_CHILDREN;
    f->name = strdup(name);
    f->help = malloc(escaped_len(help, "\\\n") + 1);
    if (!f->name || !f->help)
        goto out;
    *escape_into(f->help, help, "\\\n") = '\0';
    for (; f->nlabels < nlabels; f->nlabels++) {
        f->label_names[f->nlabels] = strdup(label_names[f->nlabels]);
        if (!f->label_names[f->nlabels])
            goto out;
    }
    if (kind == METRICS_KIND_HISTOGRAM) {
        f->nbounds = nbuckets;
        f->bounds = malloc((nbuckets ? nbuckets : 1) * sizeof *f->bounds);
        f->le = malloc((nbuckets ? nbuckets : 1) * sizeof *f->le);
        if (!f->bounds || !f->le)
            goto out;
        for (size_t i = 0; i < nbuckets; i++) {
            f->bounds[i] = buckets[i];
            fmt_double(buckets[i], f->le[i]);
        }
    }
    if (nlabels == 0 && !fn) {
        /* The single child exists from the start: exported as 0 until used. */
        enum refusal unused;
        if (!child_get_locked(f, NULL, &unused))
            goto out;
    }

    pthread_mutex_lock(&r->mu);
    if (collides_locked(r, f)) {
        rc = -EEXIST;
    } else {
        *r->tail = f;
        r->tail = &f->next;
        rc = 0;
    }
    pthread_mutex_unlock(&r->mu);
    if (rc == 0) {
        if (out)
            *out = f;
        return 0;
    }
out:
    family_free(f);
    return rc;
}

int metrics_register_counter(struct metrics_registry *r, const char *name, const char *help,
                             const char *const *label_names, struct metrics_family **out)
{
    return register_family(r, METRICS_KIND_COUNTER, name, help, label_names, NULL, 0, NULL,
                           NULL, out);
}

int metrics_register_gauge(struct metrics_registry *r, const char *name, const char *help,
                           const char *const *label_names, struct metrics_family **out)
{
    return register_family(r, METRICS_KIND_GAUGE, name, help, label_names, NULL, 0, NULL, NULL,
                           out);
}

int metrics_register_histogram(struct metrics_registry *r, const char *name, const char *help,
                               const char *const *label_names, const double *buckets,
                               size_t nbuckets, struct metrics_family **out)
{
    return register_family(r, METRICS_KIND_HISTOGRAM, name, help, label_names, buckets,
                           nbuckets, NULL, NULL, out);
}

int metrics_gauge_func(struct metrics_registry *r, const char *name, const char *help,
                       double (*fn)(void *arg), void *arg)
{
    if (!fn)
        return -EINVAL;
    return register_family(r, METRICS_KIND_GAUGE, name, help, NULL, NULL, 0, fn, arg, NULL);
}

int metrics_counter_func(struct metrics_registry *r, const char *name, const char *help,
                         double (*fn)(void *arg), void *arg)
{
    if (!fn)
        return -EINVAL;
    return register_family(r, METRICS_KIND_COUNTER, name, help, NULL, NULL, 0, fn, arg, NULL);
}

/* ---- hot path ------------------------------------------------------------ */

void metrics_counter_add(struct metrics_counter *c, uint64_t n)
{
    if (c)
        atomic_fetch_add_explicit(&c->n, n, memory_order_relaxed);
}

void metrics_counter_add_float(struct metrics_counter *c, double v)
{
    if (c && v > 0) /* false for NaN too */
        atomic_add_double(&c->fbits, v);
}

void metrics_gauge_set(struct metrics_gauge *g, double v)
{
    if (g)
        atomic_store_explicit(&g->bits, d2u(v), memory_order_relaxed);
}

void metrics_gauge_add(struct metrics_gauge *g, double v)
{
    if (g)
        atomic_add_double(&g->bits, v);
}

void metrics_histogram_observe(struct metrics_histogram *h, double v)
{
    if (!h || isnan(v))
        return;
    size_t lo = 0, hi = h->nbounds;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (v <= h->bounds[mid])
            hi = mid;
        else
            lo = mid + 1;
    }
    atomic_fetch_add_explicit(&h->counts[lo], 1, memory_order_relaxed);
    atomic_add_double(&h->sum_bits, v);
}

/* ---- reading back -------------------------------------------------------- */

double metrics_counter_value(const struct metrics_counter *c)
{
    if (!c)
        return 0;
    return (double)atomic_load_explicit(&c->n, memory_order_relaxed) +
           u2d(atomic_load_explicit(&c->fbits, memory_order_relaxed));
}

double metrics_gauge_value(const struct metrics_gauge *g)
{
    return g ? u2d(atomic_load_explicit(&g->bits, memory_order_relaxed)) : 0;
}

uint64_t metrics_histogram_count(const struct metrics_histogram *h)
{
    uint64_t n = 0;
    for (size_t i = 0; h && i <= h->nbounds; i++)
        n += atomic_load_explicit(&h->counts[i], memory_order_relaxed);
    return n;
}

double metrics_histogram_sum(const struct metrics_histogram *h)
{
    return h ? u2d(atomic_load_explicit(&h->sum_bits, memory_order_relaxed)) : 0;
}

/* ---- exposition ---------------------------------------------------------- */

/* An output with a sticky error, so a long run of appends is checked once. */
struct out {
    struct buf *b;
    int err;
};

static void put(struct out *o, const char *p, size_t n)
{
    if (!o->err)
        o->err = buf_append(o->b, p, n);
}

static void put_cstr(struct out *o, const char *s) { put(o, s, strlen(s)); }

static void put_u64(struct out *o, uint64_t v)
{
    if (!o->err)
        o->err = buf_append_u64(o->b, v);
}

static void put_double(struct out *o, double v)
{
    char tmp[32];
    put(o, tmp, fmt_double(v, tmp));
}

/* name[suffix][{labels[,le="…"]}] and a space: the value follows. */
static void put_series(struct out *o, const struct metrics_family *f, const char *suffix,
                       const struct child *c, const char *le)
{
    put_cstr(o, f->name);
    if (suffix)
        put_cstr(o, suffix);
    bool has_labels = c && c->labels;
    if (has_labels || le) {
        put(o, "{", 1);
        if (has_labels)
            put(o, c->labels, c->labels_len);
        if (le) {
            if (has_labels)
                put(o, ",", 1);
            put(o, "le=\"", 4);
            put_cstr(o, le);
            put(o, "\"", 1);
        }
        put(o, "}", 1);
    }
    put(o, " ", 1);
}

static void render_counter(struct out *o, const struct metrics_family *f, const struct child *c)
{
    const struct metrics_counter *m = c->m;
    uint64_t n = atomic_load_explicit(&m->n, memory_order_relaxed);
    double fr = u2d(atomic_load_explicit(&m->fbits, memory_order_relaxed));
    put_series(o, f, NULL, c, NULL);
    if (fr == 0)
        put_u64(o, n); /* exact, even past 2^53 */
    else
        put_double(o, (double)n + fr);
    put(o, "\n", 1);
}

static void render_histogram(struct out *o, const struct metrics_family *f, const struct child *c)
{
    const struct metrics_histogram *h = c->m;
    uint64_t cumulative = 0;
    for (size_t i = 0; i <= f->nbounds; i++) {
        cumulative += atomic_load_explicit(&h->counts[i], memory_order_relaxed);
        put_series(o, f, "_bucket", c, i < f->nbounds ? f->le[i] : "+Inf");
        put_u64(o, cumulative);
        put(o, "\n", 1);
    }
    put_series(o, f, "_sum", c, NULL);
    put_double(o, metrics_histogram_sum(h));
    put(o, "\n", 1);
    put_series(o, f, "_count", c, NULL);
    put_u64(o, cumulative); /* equal to +Inf by construction */
    put(o, "\n", 1);
}

static void render_family(struct out *o, const struct metrics_family *f)
{
    static const char *const type_names[] = { "counter", "gauge", "histogram" };
    if (!f->fn && f->nchildren == 0)
        return;
    put(o, "# HELP ", 7);
    put_cstr(o, f->name);
    put(o, " ", 1);
    put_cstr(o, f->help);
    put(o, "\n# TYPE ", 8);
    put_cstr(o, f->name);
    put(o, " ", 1);
    put_cstr(o, type_names[f->kind]);
    put(o, "\n", 1);
    if (f->fn) {
        put_series(o, f, NULL, NULL, NULL);
        put_double(o, f->fn(f->arg));
        put(o, "\n", 1);
        return;
    }
    for (size_t i = 0; i < f->nchildren && !o->err; i++) {
        const struct child *c = &f->children[i];
        switch (f->kind) {
        case METRICS_KIND_COUNTER:
            render_counter(o, f, c);
            break;
        case METRICS_KIND_GAUGE:
            put_series(o, f, NULL, c, NULL);
            put_double(o, metrics_gauge_value(c->m));
            put(o, "\n", 1);
            break;
        case METRICS_KIND_HISTOGRAM:
            render_histogram(o, f, c);
            break;
        }
    }
}

int metrics_render(struct metrics_registry *r, struct buf *out)
{
    if (!r || !out)
        return -EINVAL;
    size_t before = buf_len(out);
    struct out o = { out, 0 };
    pthread_mutex_lock(&r->mu);
    for (const struct metrics_family *f = r->head; f && !o.err; f = f->next)
        render_family(&o, f);
    pthread_mutex_unlock(&r->mu);
    if (o.err)
        out->wpos = out->rpos + before; /* growth may have compacted: keep relative */
    return o.err;
}

/* ---- process metrics ----------------------------------------------------- */

/* Reads a small /proc file into buf (NUL-terminated). Length or -errno. */
static ssize_t read_small_file(const char *path, char *buf, size_t size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    size_t n = 0;
    while (n + 1 < size) {
        ssize_t k = read(fd, buf + n, size - 1 - n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            break;
        n += (size_t)k;
    }
    close(fd);
    buf[n] = '\0';
    return (ssize_t)n;
}

static double process_cpu_seconds(void *arg)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) < 0)
        return NAN;
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

/* /proc/self/statm: "size resident shared text lib data dt", in pages. */
static double process_statm_field(int field)
{
    char buf[256];
    unsigned long long size, resident;
    if (read_small_file("/proc/self/statm", buf, sizeof buf) <= 0 ||
        sscanf(buf, "%llu %llu", &size, &resident) != 2)
        return NAN;
    long page = sysconf(_SC_PAGESIZE);
    return (double)(field == 0 ? size : resident) * (double)(page > 0 ? page : 4096);
}

static double process_virtual_bytes(void *arg) { return process_statm_field(0); }
static double process_resident_bytes(void *arg) { return process_statm_field(1); }

static double process_open_fds(void *arg)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return NAN;
    int self = dirfd(d);
    double n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        if (atoi(e->d_name) == self)
            continue; /* the directory we are reading is not the process's */
        n++;
    }
    closedir(d);
    return n;
}

static double process_max_fds(void *arg)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return NAN;
    return rl.rlim_cur == RLIM_INFINITY ? INFINITY : (double)rl.rlim_cur;
}

/* Boot time (btime in /proc/stat) plus the process's start in clock ticks
 * after boot (field 22 of /proc/self/stat), as the official clients do. */
static double start_time;
static pthread_once_t start_time_once = PTHREAD_ONCE_INIT;

static void start_time_init(void)
{
    char buf[4096];
    start_time = NAN;
    if (read_small_file("/proc/self/stat", buf, sizeof buf) <= 0)
        return;
    /* comm (field 2) may hold spaces and parentheses: fields resume after
     * the last ')'; starttime is the 20th field from there. */
    char *p = strrchr(buf, ')');
    if (!p)
        return;
    unsigned long long ticks = 0;
    int field = 2;
    for (char *save = NULL, *tok = strtok_r(p + 1, " ", &save); tok;
         tok = strtok_r(NULL, " ", &save)) {
        if (++field == 22) {
            ticks = strtoull(tok, NULL, 10);
            break;
        }
    }
    if (field != 22)
        return;
    /* /proc/stat's intr line grows with the IRQ count: read it line by line. */
    FILE *fp = fopen("/proc/stat", "re");
    if (!fp)
        return;
    char *line = NULL;
    size_t cap = 0;
    unsigned long long btime = 0;
    bool has_btime = false;
    while (!has_btime && getline(&line, &cap, fp) > 0)
        if (strncmp(line, "btime ", 6) == 0) {
            btime = strtoull(line + 6, NULL, 10);
            has_btime = true;
        }
    free(line);
    fclose(fp);
    long hz = sysconf(_SC_CLK_TCK);
    if (!has_btime || hz <= 0)
        return;
    start_time = (double)btime + (double)ticks / (double)hz;
}

static double process_start_time(void *arg)
{
    pthread_once(&start_time_once, start_time_init);
    return start_time;
}

int metrics_register_process(struct metrics_registry *r)
{
    static const struct {
        bool is_counter;
        const char *name;
        const char *help;
        double (*fn)(void *);
    } defs[] = {
        { true, "process_cpu_seconds_total", "Total user and system CPU time spent in seconds.",
          process_cpu_seconds },
        { false, "process_resident_memory_bytes", "Resident memory size in bytes.",
          process_resident_bytes },
        { false, "process_virtual_memory_bytes", "Virtual memory size in bytes.",
          process_virtual_bytes },
        { false, "process_open_fds", "Number of open file descriptors.", process_open_fds },
        { false, "process_max_fds", "Maximum number of open file descriptors.",
          process_max_fds },
        { false, "process_start_time_seconds",
          "Start time of the process since unix epoch in seconds.", process_start_time },
    };
    pthread_once(&start_time_once, start_time_init);
    for (size_t i = 0; i < sizeof defs / sizeof defs[0]; i++) {
        int rc = defs[i].is_counter
                     ? metrics_counter_func(r, defs[i].name, defs[i].help, defs[i].fn, NULL)
                     : metrics_gauge_func(r, defs[i].name, defs[i].help, defs[i].fn, NULL);
        if (rc < 0)
            return rc;
    }
    return 0;
}
