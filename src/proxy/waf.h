/* waf.h — the web application firewall: OWASP CRS on libmodsecurity3,
 * evaluated off the event loops.
 *
 * CRS costs ~0.6 ms of CPU per request, ~2 ms with a small JSON body
 * (test_waf prints it): on a loop thread that would stall every connection
 * of the worker. A small pool
 * of threads evaluates each request in its own ModSecurity transaction and
 * posts the result back to the submitting loop (loop_post). The queue is
 * bounded in jobs and bytes: past it waf_check fails with -EBUSY, which the
 * engine answers with 503. Nothing here ever blocks a loop.
 *
 * One rule set is loaded per distinct (paranoia, anomaly threshold) pair
 * that routes use, and shared read-only by every pool thread (libmodsecurity
 * supports concurrent transactions on one loaded RulesSet; only loading is
 * not thread-safe, so waf_prepare serialises loads). A rule set is:
 *   - engine settings: SecRuleEngine On, request bodies inspected (JSON,
 *     XML, urlencoded and multipart parsed; modsecurity.conf-recommended
 *     rules 200000-200007: a body that does not parse, or a JSON/form body
 *     over 1 MiB, is refused with 400; no XML external entities), no
 *     response inspection, no audit or debug log (ModSecurity writes no
 *     file);
 *   - the CRS variables (crs-setup.conf.example rules 900000, 900110,
 *     900200): paranoia level, inbound anomaly threshold, and the methods of
 *     a REST API (GET HEAD POST OPTIONS PUT PATCH DELETE: which methods a
 *     route takes is the route's business, not the WAF's);
 *   - crs_setup, then REQUEST-900-EXCLUSION-RULES-BEFORE-CRS.conf from the
 *     same directory if present (the operator's exclusions, as Debian's
 *     owasp-crs.load does), then every *.conf of rules_dir in sorted order
 *     except RESPONSE-* (only requests are inspected). The .data files the
 *     rules name are found next to the rule files.
 *
 * Keep CRS's IP reputation (910) and DoS protection (912) off in
 * crs-setup.conf, as they are by default: they keep per-client state in
 * ModSecurity's in-memory collections, which in libmodsecurity 3.0.9 are
 * not safe under concurrent transactions (upstream issue #3054) and never
 * expire entries. Rate limiting is the gateway's own filter.
 *
 * The result says whether CRS would block (the anomaly score reached the
 * threshold, or a rule denied), with the detections' rule ids: the engine
 * decides what to do with it (mode detect: log; block: answer status). */
#ifndef STRATA_PROXY_WAF_H
#define STRATA_PROXY_WAF_H

#include <stdbool.h>
#include <stddef.h>

#include "core/str.h"

struct loop;
struct http1_header;
struct proxy_waf_global;
struct waf;
struct waf_job;

/* Waiting jobs per pool thread: 64 × ~1.3 ms ≈ 85 ms of queueing at most
 * before a request is refused rather than delayed further. */
#define WAF_QUEUE_PER_THREAD 64
/* Bytes of waiting requests (bodies mostly), whatever the job count. */
#define WAF_QUEUE_MAX_BYTES (32u << 20)

struct waf_request {
    struct str method, target; /* target: path?query exactly as received */
    struct str version;        /* "1.1" */
    const struct http1_header *headers;
    size_t nheaders;
    struct str body;           /* the whole body (empty for none) */
    const char *client_ip;
    int client_port;
    const char *server_ip;
    int server_port;
    const char *request_id;    /* logged by ModSecurity as unique_id; may be NULL */
    int paranoia, anomaly_threshold; /* must have been waf_prepare'd */
};

struct waf_result {
    bool matched;        /* CRS would block: anomaly score reached, or a rule denied */
    int status;          /* when matched: the intervention's status (403; 400 for a body
                            that does not parse; 413 over the body limit) */
    int anomaly_score;   /* inbound anomaly score; -1 when evaluation stopped before CRS
                            totalled it (a refused body) */
    int error;           /* 0, or -ENOMEM: the request could not be inspected */
    char rule_ids[256];  /* the detections, "942100,942190", in order of evaluation;
                            without the blocking-evaluation rules (949xxx); "" when none */
    char message[256];   /* the first detection's msg, "" when none */
};

/* Called on the submitting loop's thread, never within waf_check. r is
 * valid during the call only. */
typedef void (*waf_cb)(const struct waf_result *r, void *arg);

/* Creates the ModSecurity instance and starts g->threads pool threads
 * (default 1, at most 64). g may be NULL (defaults: crs-setup.conf in
 * /etc/modsecurity/crs, rules in /usr/share/modsecurity-crs/rules). No rule
 * set is loaded yet: see waf_prepare. NULL on failure with a message in err.
 * One per process: freeing a ModSecurity instance resets libxml2's global
 * state under any other instance's threads. */
struct waf *waf_new(const struct proxy_waf_global *g, char *err, size_t errsz);

/* Loads the rule set for (paranoia 1..4, anomaly_threshold 1..10000), once:
 * calling it again with a loaded pair does nothing and returns 0. A pair
 * costs ~50 ms to load and ~14 MiB resident (CRS 3.3.4, measured by
 * test_waf). Call at config load; loads are serialised, checks on other
 * threads go on meanwhile. Rule sets stay loaded until waf_free. 0,
 * -EINVAL (bad arguments), -ENOENT (a file or directory is missing),
 * -EBADMSG (a rule does not parse; err names the file, line and rule),
 * -ENOMEM. */
int waf_prepare(struct waf *w, int paranoia, int anomaly_threshold, char *err, size_t errsz);

/* Queues req for evaluation with the rule set of (req->paranoia,
 * req->anomaly_threshold); cb(result, arg) runs later on loop l. Copies all
 * of req (its views may die when this returns). Any loop thread. *out (if
 * out is not NULL) is the handle for waf_cancel, valid until cb has run or
 * the job is cancelled. 0; -EBUSY (queue full: answer 503), -EMSGSIZE
 * (the request alone is over WAF_QUEUE_MAX_BYTES), -ENOENT (pair not
 * prepared), -EINVAL, -ENOMEM, -ESHUTDOWN (waf_free has begun). */
int waf_check(struct waf *w, struct loop *l, const struct waf_request *req, waf_cb cb, void *arg,
              struct waf_job **out);

/* On the job's loop thread, before its cb has run (or from inside cb, where
 * it does nothing): cb will never run, and neither arg nor anything of the
 * caller's is touched afterwards. The job's own memory is freed by the WAF
 * (at once if it was still waiting, else when its evaluation ends). */
void waf_cancel(struct waf_job *j);

/* Stops the pool after the evaluations in progress and frees everything.
 * Waiting jobs are dropped (their cb never runs). Call after the loops that
 * used it have stopped; results already posted to a loop that runs again
 * are still delivered. NULL-tolerant. */
void waf_free(struct waf *w);

#endif
