/* waf.c — CRS on libmodsecurity3: rule sets per (paranoia, threshold), a
 * bounded FIFO, a fixed pool of evaluation threads. */
#include "proxy/waf.h"

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <modsecurity/intervention.h>
#include <modsecurity/modsecurity.h>
#include <modsecurity/rules_set.h>
#include <modsecurity/transaction.h>

#include "core/http1_parse.h"
#include "core/log.h"
#include "core/loop.h"
#include "proxy/proxy_config.h"

/* libmodsecurity (and the C++ runtime, libxml2, libcurl, Lua, PCRE … it
 * pulls in: about 10 MB resident) is loaded on first use, by the first
 * config that enables the WAF: a sidecar without it never maps it. */
#define MSC_FUNCS(X) X(msc_add_n_request_header) X(msc_append_request_body) X(msc_cleanup) X(msc_create_rules_set) X(msc_init) X(msc_intervention) X(msc_new_transaction_with_id) X(msc_process_connection) X(msc_process_request_body) X(msc_process_request_headers) X(msc_process_uri) X(msc_rules_add) X(msc_rules_add_file) X(msc_rules_cleanup) X(msc_set_connector_info) X(msc_set_log_cb) X(msc_transaction_cleanup)
#define MSC_DECL(f) static __typeof__(f) *p_##f;
MSC_FUNCS(MSC_DECL)
static pthread_once_t msc_once = PTHREAD_ONCE_INIT;
static char msc_load_error[256];
static bool msc_loaded;

static void msc_load(void)
{
    void *h = dlopen("libmodsecurity.so.3", RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        snprintf(msc_load_error, sizeof msc_load_error, "cannot load libmodsecurity.so.3: %s", dlerror());
        return;
    }
#define MSC_SYM(f)                                                                                                    \
    if (!(p_##f = (__typeof__(f) *)dlsym(h, #f))) {                                                                   \
        snprintf(msc_load_error, sizeof msc_load_error, "libmodsecurity.so.3 has no %s", #f);                        \
        return;                                                                                                       \
    }
    MSC_FUNCS(MSC_SYM)
#undef MSC_SYM
    msc_loaded = true; /* h stays open for the life of the process */
}
#define msc_add_n_request_header (*p_msc_add_n_request_header)
#define msc_append_request_body (*p_msc_append_request_body)
#define msc_cleanup (*p_msc_cleanup)
#define msc_create_rules_set (*p_msc_create_rules_set)
#define msc_init (*p_msc_init)
#define msc_intervention (*p_msc_intervention)
#define msc_new_transaction_with_id (*p_msc_new_transaction_with_id)
#define msc_process_connection (*p_msc_process_connection)
#define msc_process_request_body (*p_msc_process_request_body)
#define msc_process_request_headers (*p_msc_process_request_headers)
#define msc_process_uri (*p_msc_process_uri)
#define msc_rules_add (*p_msc_rules_add)
#define msc_rules_add_file (*p_msc_rules_add_file)
#define msc_rules_cleanup (*p_msc_rules_cleanup)
#define msc_set_connector_info (*p_msc_set_connector_info)
#define msc_set_log_cb (*p_msc_set_log_cb)
#define msc_transaction_cleanup (*p_msc_transaction_cleanup)

#define WAF_MAX_THREADS 64
#define WAF_DEFAULT_CRS_SETUP "/etc/modsecurity/crs/crs-setup.conf"
#define WAF_DEFAULT_RULES_DIR "/usr/share/modsecurity-crs/rules"
#define WAF_EXCLUSIONS_BEFORE "REQUEST-900-EXCLUSION-RULES-BEFORE-CRS.conf"

/* Our own rules take ids from ModSecurity's local range (1-99,999). */
#define WAF_RULE_SCORE 99990

/* Settings from modsecurity.conf-recommended (v3.0.9), for a gateway that
 * inspects requests only. The body processor: ModSecurity picks urlencoded
 * and multipart from Content-Type itself, JSON and XML need rules 200000/1
 * (without them a JSON body is not parsed into ARGS and CRS sees almost nothing
 * of it). 1 MiB without files: the listener's default max_body_bytes; a
 * larger JSON or form body is refused by 200002 rather than inspected in
 * part. SecPcreMatchLimit is refused by 3.0.9 ("not currently supported"). */
static const char WAF_ENGINE_RULES[] =
    "SecRuleEngine On\n"
    "SecRequestBodyAccess On\n"
    "SecResponseBodyAccess Off\n"
    "SecRequestBodyLimit 13107200\n"
    "SecRequestBodyNoFilesLimit 1048576\n"
    "SecRequestBodyLimitAction Reject\n"
    "SecRequestBodyJsonDepthLimit 512\n"
    "SecArgumentsLimit 1000\n"
    "SecAuditEngine Off\n"
    "SecXmlExternalEntity Off\n"
    "SecRule REQUEST_HEADERS:Content-Type \"^(?:application(?:/soap\\+|/)|text/)xml\" "
    "\"id:200000,phase:1,t:none,t:lowercase,pass,nolog,ctl:requestBodyProcessor=XML\"\n"
    "SecRule REQUEST_HEADERS:Content-Type \"^application/(?:[a-z0-9.-]+\\+)?json\" "
    "\"id:200001,phase:1,t:none,t:lowercase,pass,nolog,ctl:requestBodyProcessor=JSON\"\n"
    "SecRule &ARGS \"@ge 1000\" \"id:200007,phase:2,t:none,log,deny,status:400,"
    "msg:'Failed to fully parse request body due to large argument count',severity:2\"\n"
    "SecRule REQBODY_ERROR \"!@eq 0\" \"id:200002,phase:2,t:none,log,deny,status:400,"
    "msg:'Failed to parse request body.',logdata:'%{reqbody_error_msg}',severity:2\"\n"
    "SecRule MULTIPART_STRICT_ERROR \"!@eq 0\" \"id:200003,phase:2,t:none,log,deny,status:400,"
    "msg:'Multipart request body failed strict validation',severity:2\"\n"
    "SecRule MULTIPART_UNMATCHED_BOUNDARY \"@eq 1\" \"id:200004,phase:2,t:none,log,deny,"
    "msg:'Multipart parser detected a possible unmatched boundary.',severity:2\"\n";

/* The CRS variables, with the ids crs-setup.conf.example gives them: an
 * operator's crs-setup.conf that sets them too is refused as a duplicate
 * rule id rather than silently overriding the route's paranoia level. */
static const char WAF_CRS_VARS_FMT[] =
    "SecAction \"id:900000,phase:1,pass,nolog,t:none,setvar:tx.paranoia_level=%d\"\n"
    "SecAction \"id:900110,phase:1,pass,nolog,t:none,"
    "setvar:tx.inbound_anomaly_score_threshold=%d,setvar:tx.outbound_anomaly_score_threshold=4\"\n"
    "SecAction \"id:900200,phase:1,pass,nolog,t:none,"
    "setvar:'tx.allowed_methods=GET HEAD POST OPTIONS PUT PATCH DELETE'\"\n";

/* After CRS: reports the total when 949110 did not block (when it does,
 * its own message carries the total and this rule is not reached). */
static const char WAF_SCORE_RULE[] =
    "SecAction \"id:99990,phase:2,pass,log,t:none,msg:'strata anomaly score %{tx.anomaly_score}'\"\n";

struct waf_rules {
    struct waf_rules *next;
    int paranoia, threshold;
    RulesSet *set;
};

enum waf_job_state {
    WAF_JOB_QUEUED,    /* in w's queue */
    WAF_JOB_RUNNING,   /* a pool thread evaluates it */
    WAF_JOB_POSTED,    /* result posted to the loop; from here on, loop thread only */
    WAF_JOB_CANCELLED, /* running or posted, then cancelled: whoever holds it frees it */
    WAF_JOB_DELIVERED, /* cb is running */
};

struct waf_header {
    const char *name, *value;
    size_t nname, nvalue;
};

struct waf_job {
    struct waf_job *next;
    struct waf *w;
    struct loop *loop;
    waf_cb cb;
    void *arg;
    RulesSet *rules;
    _Atomic int state; /* enum waf_job_state: changed under w->mu until POSTED */
    size_t size;
    /* the request, copied: C strings where ModSecurity wants them */
    char *method, *target, *version, *client_ip, *server_ip, *request_id;
    int client_port, server_port;
    const char *body;
    size_t nbody;
    struct waf_result result;
    size_t nheaders;
    struct waf_header headers[]; /* then the bytes of every string above */
};

struct waf {
    ModSecurity *msc;
    char *crs_setup, *rules_dir;
    pthread_mutex_t load_mu; /* rule loading is not thread-safe in libmodsecurity */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct waf_rules *rules; /* under mu */
    struct waf_job *head, *tail;
    size_t queued, queue_max, queued_bytes;
    bool is_stopping;
    int nthreads;
    pthread_t threads[WAF_MAX_THREADS];
};

static int fail(char *err, size_t errsz, int rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(char *err, size_t errsz, int rc, const char *fmt, ...)
{
    if (err && errsz) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errsz, fmt, ap);
        va_end(ap);
    }
    return rc;
}

/* ---- log messages → rule ids, message, score ---------------------------- */

/* One transaction's findings, filled by the log callback on the pool thread. */
struct waf_eval {
    struct waf_result *r;
    size_t ids_len;
};

/* Finds `key` in [p, end). */
static const char *find(const char *p, const char *end, const char *key)
{
    size_t n = strlen(key);
    if ((size_t)(end - p) < n)
        return NULL;
    return memmem(p, (size_t)(end - p), key, n);
}

/* Reads decimal digits at p (up to end) and the closing quote. -1 if none. */
static long read_digits(const char *p, const char *end, const char **after)
{
    long v = 0;
    const char *q = p;
    while (q < end && *q >= '0' && *q <= '9' && v < 100000000)
        v = v * 10 + (*q++ - '0');
    if (q == p || q >= end || *q != '"')
        return -1;
    *after = q;
    return v;
}

/* The text log is: "ModSecurity: Warning. " + the match (which quotes the
 * offending input) + ` [file "F"] [line "L"] [id "N"] [rev "R"] [msg "M"]
 * [data "D"] ...` + ` [uri "U"] ...` (the uri is input again). Input could
 * contain a forged ` [line "1"] [id "1"] [rev "`: a message in which that
 * sequence is not unique is not trusted for its id (the verdict does not
 * depend on it: that comes from the intervention and the score). */
static long message_rule_id(const char *p, const char *end, const char **msg, size_t *msglen)
{
    const char *found = NULL, *s = p;
    long id = -1;
    for (;;) {
        const char *l = find(s, end, " [line \"");
        if (!l)
            break;
        s = l + 1;
        const char *q;
        if (read_digits(l + 8, end, &q) < 0)
            continue;
        if ((size_t)(end - q) < 8 || memcmp(q, "\"] [id \"", 8) != 0)
            continue;
        const char *idend;
        long v = read_digits(q + 8, end, &idend);
        if (v < 0 || (size_t)(end - idend) < 9 || memcmp(idend, "\"] [rev \"", 9) != 0)
            continue;
        if (found)
            return -1; /* forged */
        found = idend + 9;
        id = v;
        /* These rules' messages quote no input before their fields: the
         * first candidate is theirs. (Were one forged in another rule's
         * message, the real one still comes last and wins.) */
        if (id == WAF_RULE_SCORE || id == 949110)
            break;
    }
    if (!found)
        return -1;
    *msg = NULL;
    *msglen = 0;
    const char *rev_end = find(found, end, "\"] [msg \"");
    if (rev_end) {
        const char *m = rev_end + 9;
        const char *m_end = find(m, end, "\"] [data \"");
        if (m_end) {
            *msg = m;
            *msglen = (size_t)(m_end - m);
        }
    }
    return id;
}

static void add_rule_id(struct waf_eval *ev, long id)
{
    char one[16];
    int n = snprintf(one, sizeof one, "%ld", id);
    struct waf_result *r = ev->r;
    /* once each: a rule logs once per evaluation, but chains and multiMatch can repeat */
    for (const char *p = r->rule_ids; (p = strstr(p, one)) != NULL; p += n)
        if ((p == r->rule_ids || p[-1] == ',') && (p[n] == ',' || p[n] == '\0'))
            return;
    size_t need = (size_t)n + (ev->ids_len ? 1 : 0);
    if (ev->ids_len + need >= sizeof r->rule_ids)
        return; /* full: the first ones are the interesting ones */
    if (ev->ids_len)
        r->rule_ids[ev->ids_len++] = ',';
    memcpy(r->rule_ids + ev->ids_len, one, (size_t)n + 1);
    ev->ids_len += (size_t)n;
}

/* msc_set_log_cb: data is the transaction's logCbData (our waf_eval), on
 * the pool thread that runs the transaction. */
static void on_log(void *data, const void *text)
{
    struct waf_eval *ev = data;
    if (!ev || !text)
        return;
    const char *p = text, *end = p + strlen(p);
    const char *msg;
    size_t msglen;
    long id = message_rule_id(p, end, &msg, &msglen);
    if (id < 0)
        return;
    if (id == WAF_RULE_SCORE || id == 949110) {
        /* trusted text: no input in these messages before the msg field */
        const char *key = id == WAF_RULE_SCORE ? "strata anomaly score " : "(Total Score: ";
        const char *v = msg ? find(msg, msg + msglen, key) : NULL;
        if (v) {
            v += strlen(key);
            long score = 0;
            while (v < msg + msglen && *v >= '0' && *v <= '9' && score < 1000000)
                score = score * 10 + (*v++ - '0');
            ev->r->anomaly_score = (int)score;
        }
        return;
    }
    if (id >= 949000 && id < 950000)
        return; /* blocking evaluation: not a detection */
    add_rule_id(ev, id);
    if (!ev->r->message[0] && msg) {
        size_t n = msglen < sizeof ev->r->message - 1 ? msglen : sizeof ev->r->message - 1;
        memcpy(ev->r->message, msg, n);
        ev->r->message[n] = '\0';
    }
}

/* ---- rule sets ----------------------------------------------------------- */

static int add_text(RulesSet *set, const char *what, const char *text, char *err, size_t errsz)
{
    const char *e = NULL;
    if (msc_rules_add(set, text, &e) < 0) {
        int rc = fail(err, errsz, -EBADMSG, "%s: %s", what, e ? e : "cannot load");
        free((void *)e);
        return rc;
    }
    return 0;
}

static int add_file(RulesSet *set, const char *path, char *err, size_t errsz)
{
    const char *e = NULL;
    if (access(path, R_OK) != 0)
        return fail(err, errsz, -ENOENT, "%s: %s", path, strerror(errno));
    if (msc_rules_add_file(set, path, &e) < 0) {
        /* e names the line and the rule: "Rules error. File: ... Line: ..." */
        int rc = fail(err, errsz, -EBADMSG, "%s: %s", path, e ? e : "cannot load");
        free((void *)e);
        return rc;
    }
    return 0;
}

static int is_rule_file(const struct dirent *d)
{
    size_t n = strlen(d->d_name);
    return n > 5 && strcmp(d->d_name + n - 5, ".conf") == 0 && strncmp(d->d_name, "RESPONSE-", 9) != 0;
}

static int load_rules(struct waf *w, RulesSet *set, int paranoia, int threshold, char *err, size_t errsz)
{
    char vars[1024];
    snprintf(vars, sizeof vars, WAF_CRS_VARS_FMT, paranoia, threshold);
    int rc = add_text(set, "engine settings", WAF_ENGINE_RULES, err, errsz);
    if (rc == 0)
        rc = add_text(set, "CRS variables", vars, err, errsz);
    if (rc == 0)
        rc = add_file(set, w->crs_setup, err, errsz);
    if (rc < 0)
        return rc;

    char path[PATH_MAX];
    const char *slash = strrchr(w->crs_setup, '/');
    int dirlen = slash ? (int)(slash - w->crs_setup) : 1;
    snprintf(path, sizeof path, "%.*s/%s", dirlen, slash ? w->crs_setup : ".", WAF_EXCLUSIONS_BEFORE);
    if (access(path, F_OK) == 0 && (rc = add_file(set, path, err, errsz)) < 0)
        return rc;

    struct dirent **names = NULL;
    int n = scandir(w->rules_dir, &names, is_rule_file, alphasort);
    if (n < 0) {
        int e = errno;
        return fail(err, errsz, e == ENOMEM ? -ENOMEM : -ENOENT, "%s: %s", w->rules_dir, strerror(e));
    }
    if (n == 0)
        rc = fail(err, errsz, -ENOENT, "%s: no *.conf rule files", w->rules_dir);
    for (int i = 0; i < n; i++) {
        if (rc == 0) {
            if ((size_t)snprintf(path, sizeof path, "%s/%s", w->rules_dir, names[i]->d_name) >= sizeof path)
                rc = fail(err, errsz, -ENAMETOOLONG, "%s/%s: path too long", w->rules_dir,
                          names[i]->d_name);
            else
                rc = add_file(set, path, err, errsz);
        }
        free(names[i]);
    }
    free(names);
    if (rc == 0)
        rc = add_text(set, "score rule", WAF_SCORE_RULE, err, errsz);
    return rc;
}

static RulesSet *find_rules(struct waf *w, int paranoia, int threshold)
{
    for (struct waf_rules *r = w->rules; r; r = r->next)
        if (r->paranoia == paranoia && r->threshold == threshold)
            return r->set;
    return NULL;
}

int waf_prepare(struct waf *w, int paranoia, int anomaly_threshold, char *err, size_t errsz)
{
    if (!w || paranoia < 1 || paranoia > 4 || anomaly_threshold < 1 || anomaly_threshold > 10000)
        return fail(err, errsz, -EINVAL, "paranoia must be 1..4 and anomaly_threshold 1..10000");
    pthread_mutex_lock(&w->load_mu);
    pthread_mutex_lock(&w->mu);
    bool is_loaded = find_rules(w, paranoia, anomaly_threshold) != NULL;
    pthread_mutex_unlock(&w->mu);
    int rc = 0;
    if (is_loaded)
        goto out;
    struct waf_rules *r = calloc(1, sizeof *r);
    RulesSet *set = r ? msc_create_rules_set() : NULL;
    if (!set) {
        free(r);
        rc = fail(err, errsz, -ENOMEM, "out of memory");
        goto out;
    }
    rc = load_rules(w, set, paranoia, anomaly_threshold, err, errsz);
    if (rc < 0) {
        msc_rules_cleanup(set);
        free(r);
        goto out;
    }
    r->paranoia = paranoia;
    r->threshold = anomaly_threshold;
    r->set = set;
    pthread_mutex_lock(&w->mu);
    r->next = w->rules;
    w->rules = r;
    pthread_mutex_unlock(&w->mu);
out:
    pthread_mutex_unlock(&w->load_mu);
    return rc;
}

/* ---- evaluation ---------------------------------------------------------- */

/* True (and the result filled) when ModSecurity has decided to interrupt.
 * The disruptive rule's message comes here, not to the log callback. */
static bool intervened(Transaction *t, struct waf_eval *ev)
{
    struct waf_result *r = ev->r;
    ModSecurityIntervention it = { .status = 200 };
    int disruptive = msc_intervention(t, &it);
    if (it.log)
        on_log(ev, it.log);
    free(it.url);
    free(it.log);
    if (!disruptive)
        return false;
    r->matched = true;
    r->status = it.status >= 400 && it.status <= 599 ? it.status : 403;
    return true;
}

static void evaluate(struct waf *w, struct waf_job *j)
{
    struct waf_result *r = &j->result;
    struct waf_eval ev = { .r = r };
    r->anomaly_score = -1;
    Transaction *t = msc_new_transaction_with_id(w->msc, j->rules, j->request_id, &ev);
    if (!t) {
        r->error = -ENOMEM;
        return;
    }
    msc_process_connection(t, j->client_ip, j->client_port, j->server_ip, j->server_port);
    msc_process_uri(t, j->target, j->method, j->version);
    for (size_t i = 0; i < j->nheaders; i++)
        msc_add_n_request_header(t, (const unsigned char *)j->headers[i].name, j->headers[i].nname,
                                 (const unsigned char *)j->headers[i].value, j->headers[i].nvalue);
    msc_process_request_headers(t);
    if (!intervened(t, &ev)) {
        if (j->nbody)
            msc_append_request_body(t, (const unsigned char *)j->body, j->nbody);
        /* Even without a body: phase 2 (where CRS totals the score and
         * blocks) only runs from here. */
        if (!intervened(t, &ev)) {
            msc_process_request_body(t);
            intervened(t, &ev);
        }
    }
    msc_transaction_cleanup(t);
}

static void deliver(void *arg)
{
    struct waf_job *j = arg;
    if (j->state != WAF_JOB_CANCELLED) {
        j->state = WAF_JOB_DELIVERED;
        j->cb(&j->result, j->arg);
    }
    free(j);
}

static void post_result(struct waf_job *j)
{
    /* loop_post allocates: on failure wait for memory rather than lose the
     * result (the request would hang until its timeout), ~1 s at most; then
     * the job is leaked: running cb here, on the wrong thread, is worse. */
    for (int i = 0; i < 100; i++) {
        if (loop_post(j->loop, deliver, j) == 0)
            return;
        nanosleep(&(struct timespec){ .tv_nsec = 10 * 1000 * 1000 }, NULL);
    }
    log_error("cannot post a result back to its loop");
}

static void *worker(void *arg)
{
    struct waf *w = arg;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (!w->head && !w->is_stopping)
            pthread_cond_wait(&w->cv, &w->mu);
        if (w->is_stopping)
            break;
        struct waf_job *j = w->head;
        w->head = j->next;
        if (!w->head)
            w->tail = NULL;
        w->queued--;
        w->queued_bytes -= j->size;
        j->state = WAF_JOB_RUNNING;
        pthread_mutex_unlock(&w->mu);

        evaluate(w, j);

        pthread_mutex_lock(&w->mu);
        if (j->state == WAF_JOB_CANCELLED) {
            free(j);
            continue;
        }
        j->state = WAF_JOB_POSTED;
        pthread_mutex_unlock(&w->mu);
        post_result(j);
        pthread_mutex_lock(&w->mu);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

/* ---- the API ------------------------------------------------------------- */

struct waf *waf_new(const struct proxy_waf_global *g, char *err, size_t errsz)
{
    int threads = g && g->threads > 0 ? g->threads : 1;
    if (threads > WAF_MAX_THREADS) {
        fail(err, errsz, -EINVAL, "threads must be 1..%d", WAF_MAX_THREADS);
        return NULL;
    }
    pthread_once(&msc_once, msc_load);
    if (!msc_loaded) {
        fail(err, errsz, -ENOSYS, "%s", msc_load_error);
        return NULL;
    }
    struct waf *w = calloc(1, sizeof *w);
    if (!w)
        goto nomem;
    pthread_mutex_init(&w->load_mu, NULL);
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    w->queue_max = (size_t)threads * WAF_QUEUE_PER_THREAD;
    w->crs_setup = strdup(g && g->crs_setup ? g->crs_setup : WAF_DEFAULT_CRS_SETUP);
    w->rules_dir = strdup(g && g->rules_dir ? g->rules_dir : WAF_DEFAULT_RULES_DIR);
    w->msc = msc_init();
    if (!w->crs_setup || !w->rules_dir || !w->msc)
        goto nomem;
    msc_set_connector_info(w->msc, "strata-proxy");
    msc_set_log_cb(w->msc, on_log);

    /* Pool threads take no signals: they belong to the main loop's signalfd. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    for (int i = 0; i < threads; i++) {
        if (pthread_create(&w->threads[i], NULL, worker, w) != 0)
            break;
        pthread_setname_np(w->threads[i], "waf");
        w->nthreads++;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (w->nthreads != threads) {
        fail(err, errsz, -EAGAIN, "cannot start %d threads", threads);
        waf_free(w);
        return NULL;
    }
    return w;
nomem:
    fail(err, errsz, -ENOMEM, "out of memory");
    waf_free(w);
    return NULL;
}

void waf_free(struct waf *w)
{
    if (!w)
        return;
    pthread_mutex_lock(&w->mu);
    w->is_stopping = true;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    for (int i = 0; i < w->nthreads; i++)
        pthread_join(w->threads[i], NULL);
    while (w->head) {
        struct waf_job *j = w->head;
        w->head = j->next;
        free(j);
    }
    while (w->rules) {
        struct waf_rules *r = w->rules;
        w->rules = r->next;
        msc_rules_cleanup(r->set);
        free(r);
    }
    if (w->msc)
        msc_cleanup(w->msc);
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    pthread_mutex_destroy(&w->load_mu);
    free(w->crs_setup);
    free(w->rules_dir);
    free(w);
}

/* Appends p[0..n) to the job's bytes; with a NUL when as_cstr. */
static char *put(char **at, const char *p, size_t n, bool as_cstr)
{
    char *s = *at;
    if (n)
        memcpy(s, p, n);
    *at += n;
    if (as_cstr)
        *(*at)++ = '\0';
    return s;
}

/* ModSecurity logs the id as unique_id: keep it to [A-Za-z0-9._:-], as
 * http1_request_id_is_valid does, so that it cannot forge log fields. */
static size_t id_len(const char *id)
{
    size_t n = 0;
    while (id && n < 128 && id[n] &&
           ((id[n] >= 'a' && id[n] <= 'z') || (id[n] >= 'A' && id[n] <= 'Z') ||
            (id[n] >= '0' && id[n] <= '9') || id[n] == '.' || id[n] == '_' || id[n] == ':' || id[n] == '-'))
        n++;
    return n;
}

int waf_check(struct waf *w, struct loop *l, const struct waf_request *req, waf_cb cb, void *arg,
              struct waf_job **out)
{
    if (out)
        *out = NULL;
    if (!w || !l || !req || !cb || (req->nheaders && !req->headers))
        return -EINVAL;
    const char *client_ip = req->client_ip ? req->client_ip : "0.0.0.0";
    const char *server_ip = req->server_ip ? req->server_ip : "0.0.0.0";
    size_t nid = id_len(req->request_id);
    size_t n = sizeof(struct waf_job) + req->nheaders * sizeof(struct waf_header) + req->method.n +
               req->target.n + req->version.n + strlen(client_ip) + strlen(server_ip) + nid + 6 +
               req->body.n;
    for (size_t i = 0; i < req->nheaders; i++)
        n += req->headers[i].name.n + req->headers[i].value.n;

    if (n > WAF_QUEUE_MAX_BYTES)
        return -EMSGSIZE;
    pthread_mutex_lock(&w->mu);
    RulesSet *rules = find_rules(w, req->paranoia, req->anomaly_threshold);
    int rc = w->is_stopping ? -ESHUTDOWN
             : !rules       ? -ENOENT
             : w->queued >= w->queue_max || w->queued_bytes + n > WAF_QUEUE_MAX_BYTES ? -EBUSY
                                                                                      : 0;
    pthread_mutex_unlock(&w->mu);
    if (rc < 0)
        return rc;

    struct waf_job *j = malloc(n);
    if (!j)
        return -ENOMEM;
    memset(j, 0, sizeof *j);
    j->w = w;
    j->loop = l;
    j->cb = cb;
    j->arg = arg;
    j->rules = rules;
    j->size = n;
    j->nheaders = req->nheaders;
    char *at = (char *)(j->headers + req->nheaders);
    j->method = put(&at, req->method.p, req->method.n, true);
    j->target = put(&at, req->target.p, req->target.n, true);
    j->version = put(&at, req->version.p, req->version.n, true);
    j->client_ip = put(&at, client_ip, strlen(client_ip), true);
    j->server_ip = put(&at, server_ip, strlen(server_ip), true);
    j->request_id = put(&at, req->request_id, nid, true);
    j->client_port = req->client_port;
    j->server_port = req->server_port;
    for (size_t i = 0; i < req->nheaders; i++) {
        struct waf_header *h = &j->headers[i];
        h->nname = req->headers[i].name.n;
        h->name = put(&at, req->headers[i].name.p, h->nname, false);
        h->nvalue = req->headers[i].value.n;
        h->value = put(&at, req->headers[i].value.p, h->nvalue, false);
    }
    j->nbody = req->body.n;
    j->body = put(&at, req->body.p, req->body.n, false);

    pthread_mutex_lock(&w->mu);
    /* checked again: the bound is what is queued now, not before the copy */
    if (w->is_stopping || w->queued >= w->queue_max || w->queued_bytes + n > WAF_QUEUE_MAX_BYTES) {
        rc = w->is_stopping ? -ESHUTDOWN : -EBUSY;
        pthread_mutex_unlock(&w->mu);
        free(j);
        return rc;
    }
    j->state = WAF_JOB_QUEUED;
    if (w->tail)
        w->tail->next = j;
    else
        w->head = j;
    w->tail = j;
    w->queued++;
    w->queued_bytes += n;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    if (out)
        *out = j;
    return 0;
}

void waf_cancel(struct waf_job *j)
{
    if (!j)
        return;
    if (j->state == WAF_JOB_DELIVERED)
        return; /* from inside cb: it is already running */
    struct waf *w = j->w;
    pthread_mutex_lock(&w->mu);
    if (j->state == WAF_JOB_QUEUED) {
        struct waf_job **pp = &w->head, *prev = NULL;
        while (*pp && *pp != j) {
            prev = *pp;
            pp = &(*pp)->next;
        }
        if (*pp) {
            *pp = j->next;
            if (w->tail == j)
                w->tail = prev;
            w->queued--;
            w->queued_bytes -= j->size;
        }
        pthread_mutex_unlock(&w->mu);
        free(j);
        return;
    }
    /* running: the pool thread frees it; posted: deliver() does */
    j->state = WAF_JOB_CANCELLED;
    pthread_mutex_unlock(&w->mu);
}
