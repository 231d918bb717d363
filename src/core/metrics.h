/* metrics.h — Prometheus metrics: counters, gauges, histograms, text exposition.
 *
 * Two phases, on purpose:
 *   - at init, a process registers *families* (name, help, label names, and
 *     buckets for a histogram) and looks up the *children* it will update
 *     (one per label-value combination) — this takes the registry mutex and
 *     allocates;
 *   - on the hot path it updates children through stable pointers with
 *     relaxed atomics: no lock, no allocation, no string work. One proxy
 *     worker loop per thread may update the same child concurrently.
 * metrics_render() writes the Prometheus text format 0.0.4 for a scrape.
 *
 *   struct metrics_family *req;
 *   metrics_register_counter(r, "strata_http_requests_total", "HTTP requests served.",
 *                            METRICS_LABELS("method", "code"), &req);
 *   struct metrics_counter *get_200 = metrics_counter_with(req, "GET", "200");
 *   ...
 *   metrics_counter_add(get_200, 1);                        (hot path)
 *
 * Names are checked at registration and a bad one is an error, never an
 * abort. The rules are Prometheus' plus what `promtool check metrics` lints,
 * so that every registry renders lint-clean:
 *   - metric names: [a-z_][a-z0-9_]*, not starting with "__"; no upper case
 *     (promtool flags camelCase) and no ':' (reserved for recording rules);
 *   - counters end in "_total"; gauges and histograms do not; only a
 *     histogram's own series may end in "_bucket", "_sum" or "_count";
 *   - label names: [a-z_][a-z0-9_]*, not "le", not starting with "__",
 *     no duplicates, at most METRICS_MAX_LABELS;
 *   - help text: non-empty valid UTF-8;
 *   - no two families may produce the same series name (a histogram "x"
 *     produces x_bucket, x_sum and x_count).
 *
 * Cardinality is bounded: a family holds at most METRICS_DEFAULT_MAX_CHILDREN
 * children (see metrics_family_set_max_children). A lookup past the bound, or
 * with label values that are not valid UTF-8 or longer than
 * METRICS_MAX_LABEL_VALUE bytes, returns NULL and increments
 *   strata_metrics_cardinality_overflow_total{metric="<family>",reason="limit"|"invalid_value"}
 * in the same registry. NULL rather than a shared "overflow" child: such a
 * child would need invented label values that can collide with real ones and
 * would lump unrelated series together. Every update function accepts NULL
 * and does nothing, so callers need no branch of their own (a NULL from an
 * allocation failure behaves the same way).
 *
 * Lifetime: families and children live as long as their registry; pointers
 * stay valid until metrics_registry_free(). There is no unregistration.
 *
 * Errors are negative errno values: -EINVAL (bad name, help, labels or
 * buckets), -EEXIST (series name already registered), -ENOMEM, -ENOBUFS
 * (render output past the buffer's maximum). */
#ifndef STRATA_METRICS_H
#define STRATA_METRICS_H

#include <stddef.h>
#include <stdint.h>

struct buf;

struct metrics_registry;
struct metrics_family;
struct metrics_counter;
struct metrics_gauge;
struct metrics_histogram;

enum {
    METRICS_MAX_LABELS = 16,
    /* 1000 series per family: well past every route × method × code product
     * of the reference system, small enough that a label fed from outside
     * input (a path, a user id) cannot grow a scrape without bound. */
    METRICS_DEFAULT_MAX_CHILDREN = 1000,
    /* 1 KiB per label value: longer values are a bug (a body or a URL
     * leaking into a label), not a series anybody wants. */
    METRICS_MAX_LABEL_VALUE = 1024,
    /* Upper bounds a histogram may declare (the +Inf bucket is implicit). */
    METRICS_MAX_BUCKETS = 64,
};

/* A NULL-terminated list of label names for the register functions:
 * METRICS_LABELS("method", "code"). Pass NULL for a family without labels. */
#define METRICS_LABELS(...) ((const char *const[]){ __VA_ARGS__, NULL })

/* ---- registry ------------------------------------------------------------ */

/* Creates an empty registry (it holds only its own, still empty,
 * strata_metrics_cardinality_overflow_total family). NULL on allocation
 * failure. The caller owns it and frees it with metrics_registry_free(). */
struct metrics_registry *metrics_registry_new(void);

/* Frees the registry with every family and child it holds. Every pointer
 * obtained from it becomes invalid; no other thread may use it any more.
 * NULL is a no-op. */
void metrics_registry_free(struct metrics_registry *r);

/* The process-wide registry that /metrics serves, created on first call
 * with the process_* metrics registered (metrics_register_process). Never
 * freed; safe to call from any thread. NULL only if that first creation
 * failed for lack of memory (a later call tries again). */
struct metrics_registry *metrics_default(void);

/* ---- registration (init time; thread-safe) ------------------------------- */

/* Registers a counter family. name must end in "_total". label_names is a
 * NULL-terminated list (METRICS_LABELS) or NULL; the strings are copied.
 * On success sets *out to the family, owned by the registry. A family
 * without labels has its single child created now, so it is exported as 0
 * from the first scrape. Errors: -EINVAL, -EEXIST, -ENOMEM; *out untouched. */
int metrics_register_counter(struct metrics_registry *r, const char *name, const char *help,
                             const char *const *label_names, struct metrics_family **out);

/* Registers a gauge family; as metrics_register_counter, but the name must
 * not end in "_total". */
int metrics_register_gauge(struct metrics_registry *r, const char *name, const char *help,
                           const char *const *label_names, struct metrics_family **out);

/* Registers a histogram family with the given bucket upper bounds (strictly
 * increasing, finite; a trailing +Inf is accepted and dropped since the +Inf
 * bucket is always there; at most METRICS_MAX_BUCKETS). buckets == NULL or
 * nbuckets == 0 selects the default latency buckets in seconds:
 * .0005 .001 .0025 .005 .01 .025 .05 .1 .25 .5 1 2.5 5 10. The bounds are
 * copied. Errors as metrics_register_counter. */
int metrics_register_histogram(struct metrics_registry *r, const char *name, const char *help,
                               const char *const *label_names, const double *buckets,
                               size_t nbuckets, struct metrics_family **out);

/* Registers a label-less gauge whose value is fn(arg), computed at render
 * time (connection counts, queue depths, pool sizes). fn runs on the
 * rendering thread with the registry lock held: it must not call into this
 * registry, must not block, and must read its data safely with respect to
 * the threads that change it. arg must outlive the registry. A NaN result
 * is exported as NaN. Errors as metrics_register_gauge. */
int metrics_gauge_func(struct metrics_registry *r, const char *name, const char *help,
                       double (*fn)(void *arg), void *arg);

/* As metrics_gauge_func for a counter (name ends in "_total"); fn must
 * return a value that never decreases. */
int metrics_counter_func(struct metrics_registry *r, const char *name, const char *help,
                         double (*fn)(void *arg), void *arg);

/* Registers the standard process metrics, named as the official clients
 * name them: process_cpu_seconds_total, process_resident_memory_bytes,
 * process_virtual_memory_bytes, process_open_fds, process_max_fds,
 * process_start_time_seconds. Values are read at render time from
 * getrusage, /proc/self/statm, /proc/self/fd and getrlimit(RLIMIT_NOFILE);
 * the start time once, from /proc/self/stat and /proc/stat. A value that
 * cannot be read renders as NaN. Errors as the register functions
 * (-EEXIST if already registered; earlier families stay registered). */
int metrics_register_process(struct metrics_registry *r);

/* Sets how many children the family may hold (at least 1). Lowering it
 * below the current count keeps the existing children and refuses new
 * ones. Thread-safe. -EINVAL if max is 0. */
int metrics_family_set_max_children(struct metrics_family *f, size_t max);

/* ---- children (init time or first use; thread-safe) ---------------------- */

/* The child of a family for these label values, created on first lookup.
 * The same values always give the same pointer, valid for the registry's
 * lifetime. values holds n strings, in the order of the family's label
 * names; they are copied. Returns NULL if f is NULL or of another kind, n
 * differs from the family's label count, the family is at its bound, a
 * value is NULL, longer than METRICS_MAX_LABEL_VALUE or not UTF-8, or on
 * allocation failure (the bound and invalid values are counted, see top).
 * Takes the registry lock: do it once, keep the pointer. */
struct metrics_counter *metrics_counter_withv(struct metrics_family *f, const char *const *values,
                                              size_t n);
struct metrics_gauge *metrics_gauge_withv(struct metrics_family *f, const char *const *values,
                                          size_t n);
struct metrics_histogram *metrics_histogram_withv(struct metrics_family *f,
                                                  const char *const *values, size_t n);

/* Variadic forms: metrics_counter_with(f, "GET", "200"); metrics_counter_with(f)
 * for a family without labels. The count is taken from the argument list,
 * so a wrong number of values is a NULL result, not undefined behaviour. */
#define METRICS_VALUES_(...) ((const char *const[]){ NULL, ##__VA_ARGS__ } + 1)
#define METRICS_NVALUES_(...) \
    (sizeof((const char *const[]){ NULL, ##__VA_ARGS__ }) / sizeof(const char *) - 1)
#define metrics_counter_with(f, ...) \
    metrics_counter_withv((f), METRICS_VALUES_(__VA_ARGS__), METRICS_NVALUES_(__VA_ARGS__))
#define metrics_gauge_with(f, ...) \
    metrics_gauge_withv((f), METRICS_VALUES_(__VA_ARGS__), METRICS_NVALUES_(__VA_ARGS__))
#define metrics_histogram_with(f, ...) \
    metrics_histogram_withv((f), METRICS_VALUES_(__VA_ARGS__), METRICS_NVALUES_(__VA_ARGS__))

/* ---- hot path (lock-free, any thread; NULL child is a no-op) ------------- */

/* Adds n to an integer counter (relaxed atomic add). */
void metrics_counter_add(struct metrics_counter *c, uint64_t n);
/* Adds a fractional amount (seconds of CPU or of busy time for a
 * "_seconds_total" counter); kept apart from the integer part so integer
 * counts stay exact past 2^53. v < 0 and NaN are ignored: counters only go
 * up. A CAS loop, so slower than metrics_counter_add under contention. */
void metrics_counter_add_float(struct metrics_counter *c, double v);

/* Sets a gauge (atomic store). */
void metrics_gauge_set(struct metrics_gauge *g, double v);
/* Adds v (negative to subtract) to a gauge (CAS loop). */
void metrics_gauge_add(struct metrics_gauge *g, double v);

/* Records one observation: the bucket with the smallest upper bound >= v
 * (le = "less or equal", as Prometheus defines it), the count and the sum.
 * NaN observations are ignored: they would make _sum NaN for good. */
void metrics_histogram_observe(struct metrics_histogram *h, double v);

/* ---- reading back (tests, callback gauges; any thread) ------------------- */

/* Current values; 0 for a NULL child. A histogram's count is the sum of its
 * buckets, read one by one, so it may trail concurrent observations. */
double metrics_counter_value(const struct metrics_counter *c);
double metrics_gauge_value(const struct metrics_gauge *g);
uint64_t metrics_histogram_count(const struct metrics_histogram *h);
double metrics_histogram_sum(const struct metrics_histogram *h);

/* ---- exposition ---------------------------------------------------------- */

/* The Content-Type to serve metrics_render()'s output with. */
#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* Appends the registry in Prometheus text format 0.0.4 to out: families in
 * registration order, each with # HELP and # TYPE once, children sorted by
 * label values; families without children are left out. Histograms as
 * cumulative _bucket{le="..."} series ending in le="+Inf", then _sum and
 * _count (equal to the +Inf bucket). Numbers are independent of the
 * process locale and parse back exactly: the shortest form for normal
 * doubles, "+Inf", "-Inf", "NaN"; integer counters print every digit, even
 * past 2^53. Takes the registry lock (so lookups wait for a scrape) and may
 * run concurrently with hot-path updates from any thread. On error
 * (-ENOBUFS past out's maximum, -ENOMEM) out is restored to its previous
 * contents; -EINVAL if r or out is NULL. */
int metrics_render(struct metrics_registry *r, struct buf *out);

#endif
