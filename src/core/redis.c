/* redis.c — hiredis 0.14's async API driven by our loop (see redis.h).
 *
 * hiredis owns the protocol and the socket; we give it an event "adapter"
 * (ev.addRead/delRead/addWrite/delWrite/cleanup → one loop_io) and add what
 * 0.14 lacks: a connect timeout, per-command deadlines, reconnection with
 * backoff and fail-fast while down.
 *
 * Every command gets a struct redis_req, which is hiredis' privdata. Sent
 * commands sit in a FIFO (`pending`) in the order hiredis will answer them,
 * so one timer armed for the oldest deadline covers them all. A context is
 * gone when hiredis calls ev.cleanup (it does so once, from
 * __redisAsyncFree, after failing every pending callback with a NULL
 * reply): that is where the loop_io is closed and a reconnect scheduled,
 * whoever started the teardown (EOF, error, timeout, connect failure). */
#include "core/redis.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/async.h>

#include "core/log.h"
#include "core/loop.h"
#include "core/metrics.h"

/* Backoff after a failed connect or a loss: 100 ms doubling to 5 s — a
 * restarted Redis is back within the first few tries, a dead one costs one
 * connect attempt every 5 s. */
#define REDIS_BACKOFF_MIN_MS 100u
#define REDIS_BACKOFF_MAX_MS 5000u

struct redis_req {
    struct redis_req *prev, *next; /* pending FIFO, or the failed list (next only) */
    struct redis_client *c;
    redis_cb cb;
    void *arg;
    uint64_t deadline_ms;
    int err;           /* for the failed list */
    bool is_timed_out; /* its deadline passed: a NULL reply means -ETIMEDOUT */
    bool is_internal;  /* AUTH / SELECT */
};

enum redis_log_state { REDIS_LOG_NONE, REDIS_LOG_UP, REDIS_LOG_DOWN };

struct redis_client {
    struct loop *loop;
    char host[64];
    int port;
    int db;
    char *user;     /* NULL: none */
    char *password; /* NULL: no AUTH */
    uint32_t connect_timeout_ms;
    uint32_t command_timeout_ms;
    uint32_t max_pending;

    redisAsyncContext *ac; /* NULL while down */
    struct loop_io io;
    unsigned want;
    bool is_up;       /* connected: commands go out */
    bool is_ac_dying; /* teardown of ac under way: do not free it again */
    enum redis_log_state log_state;

    struct loop_timer conn_timer; /* connect deadline while connecting, backoff while down */
    struct loop_timer cmd_timer;  /* oldest pending command's deadline */
    uint32_t backoff_ms;

    struct redis_req pending; /* sentinel of the FIFO of sent commands */
    uint32_t npending;

    struct redis_req *failed_head, *failed_tail; /* answered on the next defer */
    struct loop_defer fail_defer;

    int depth;        /* >0 while inside hiredis or a user callback */
    bool is_freeing;
    struct loop_defer free_defer;
};

/* ---- metrics ------------------------------------------------------------ */

static struct metrics_counter *m_ok, *m_error, *m_timeout, *m_unavailable;
static pthread_once_t metrics_once = PTHREAD_ONCE_INIT;

static void metrics_init(void)
{
    struct metrics_registry *r = metrics_default();
    struct metrics_family *f = NULL;
    if (!r || metrics_register_counter(r, "strata_redis_commands_total",
                                       "Redis commands by outcome.", METRICS_LABELS("result"),
                                       &f) != 0)
        return; /* metrics are best effort: NULL children are no-ops */
    m_ok = metrics_counter_with(f, "ok");
    m_error = metrics_counter_with(f, "error");
    m_timeout = metrics_counter_with(f, "timeout");
    m_unavailable = metrics_counter_with(f, "unavailable");
}

static void count_result(int err, const redisReply *r)
{
    if (err == 0)
        metrics_counter_add(r && r->type == REDIS_REPLY_ERROR ? m_error : m_ok, 1);
    else if (err == -ETIMEDOUT)
        metrics_counter_add(m_timeout, 1);
    else if (err == -EPROTO)
        metrics_counter_add(m_error, 1);
    else
        metrics_counter_add(m_unavailable, 1);
}

/* ---- URL ---------------------------------------------------------------- */

static char *dup_n(const char *p, size_t n)
{
    char *s = malloc(n + 1);
    if (s) {
        memcpy(s, p, n);
        s[n] = '\0';
    }
    return s;
}

/* redis://[[user]:password@]host[:port][/db]. On error returns a static
 * reason. */
static const char *parse_url(struct redis_client *c, const char *url)
{
    static const char scheme[] = "redis://";
    if (!url || strncmp(url, scheme, sizeof scheme - 1) != 0)
        return "must start with redis://";
    const char *p = url + sizeof scheme - 1;
    const char *end = p + strcspn(p, "/?#");
    const char *at = memchr(p, '@', (size_t)(end - p));
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        if (!colon)
            return "credentials must be [user]:password";
        if (colon > p && !(c->user = dup_n(p, (size_t)(colon - p))))
            return "out of memory";
        if (!(c->password = dup_n(colon + 1, (size_t)(at - colon - 1))))
            return "out of memory";
        p = at + 1;
    }
    const char *host = p, *host_end, *port_at = NULL;
    if (*p == '[') {
        host = p + 1;
        host_end = memchr(host, ']', (size_t)(end - host));
        if (!host_end)
            return "unterminated [ipv6] host";
        if (host_end + 1 < end) {
            if (host_end[1] != ':')
                return "junk after ]";
            port_at = host_end + 2;
        }
    } else {
        host_end = memchr(p, ':', (size_t)(end - p));
        if (host_end)
            port_at = host_end + 1;
        else
            host_end = end;
    }
    size_t hn = (size_t)(host_end - host);
    if (hn == 0 || hn >= sizeof c->host)
        return "missing or overlong host";
    memcpy(c->host, host, hn);
    c->host[hn] = '\0';
    if (strcmp(c->host, "localhost") == 0)
        strcpy(c->host, "127.0.0.1");
    else if (!strchr(c->host, ':') && strspn(c->host, "0123456789.") != hn)
        return "host must be numeric or localhost (no DNS on the loop thread)";
    c->port = 6379;
    if (port_at) {
        char *e;
        if (port_at == end)
            return "empty port";
        long v = strtol(port_at, &e, 10);
        if (e != end || v < 1 || v > 65535)
            return "bad port";
        c->port = (int)v;
    }
    c->db = 0;
    if (*end == '/' && end[1]) {
        char *e;
        long v = strtol(end + 1, &e, 10);
        if (*e || v < 0 || v > 1000000)
            return "bad database number";
        c->db = (int)v;
    } else if (*end && !(*end == '/' && !end[1])) {
        return "unexpected query or fragment";
    }
    return NULL;
}

/* ---- request lists -------------------------------------------------------- */

static void pending_push(struct redis_client *c, struct redis_req *q)
{
    q->next = &c->pending;
    q->prev = c->pending.prev;
    c->pending.prev->next = q;
    c->pending.prev = q;
    c->npending++;
}

static void pending_remove(struct redis_client *c, struct redis_req *q)
{
    q->prev->next = q->next;
    q->next->prev = q->prev;
    q->prev = q->next = NULL;
    c->npending--;
}

static void fail_run(void *data);

/* Answers q with err on the next defer: never inside redis_command(). */
static int fail_later(struct redis_client *c, struct redis_req *q, int err)
{
    q->err = err;
    q->next = NULL;
    if (c->failed_tail)
        c->failed_tail->next = q;
    else
        c->failed_head = q;
    c->failed_tail = q;
    loop_defer(c->loop, &c->fail_defer, fail_run, c);
    return 0;
}

static void finish_free(void *data);

static void maybe_free(struct redis_client *c)
{
    if (c->is_freeing && c->depth == 0)
        loop_defer(c->loop, &c->free_defer, finish_free, c);
}

static void fail_run(void *data)
{
    struct redis_client *c = data;
    struct redis_req *q = c->failed_head;
    c->failed_head = c->failed_tail = NULL;
    c->depth++;
    while (q) {
        struct redis_req *next = q->next;
        if (!c->is_freeing) {
            count_result(q->err, NULL);
            q->cb(q->err, NULL, q->arg);
        }
        free(q);
        q = next;
    }
    c->depth--;
    maybe_free(c);
}

/* ---- connection ------------------------------------------------------------ */

static void start_connect(struct redis_client *c);

static void log_down(struct redis_client *c, const char *why)
{
    if (c->log_state == REDIS_LOG_DOWN)
        return;
    log_warn(c->log_state == REDIS_LOG_UP ? "redis connection lost" : "redis unavailable",
             LOG_STR("host", c->host), LOG_INT("port", c->port), LOG_STR("reason", why));
    c->log_state = REDIS_LOG_DOWN;
}

static void schedule_reconnect(struct redis_client *c)
{
    loop_timer_start(&c->conn_timer, c->backoff_ms);
    c->backoff_ms = c->backoff_ms * 2 > REDIS_BACKOFF_MAX_MS ? REDIS_BACKOFF_MAX_MS
                                                             : c->backoff_ms * 2;
}

/* Drops the current context: its pending commands are answered (NULL reply),
 * then ev.cleanup → on_ac_gone. */
static void drop_connection(struct redis_client *c)
{
    if (!c->ac || c->is_ac_dying)
        return;
    c->is_up = false;
    c->is_ac_dying = true;
    redisAsyncFree(c->ac);
}

/* ev.cleanup: hiredis is freeing the context. */
static void ev_cleanup(void *privdata)
{
    struct redis_client *c = privdata;
    if (!c->ac)
        return;
    const char *why = c->ac->errstr && *c->ac->errstr ? c->ac->errstr
                      : c->ac->err                     ? "error"
                                                       : "closed";
    char reason[128];
    snprintf(reason, sizeof reason, "%s", why); /* errstr dies with the context */
    loop_io_close(&c->io);
    c->ac = NULL;
    c->want = 0;
    c->is_up = false;
    c->is_ac_dying = false;
    loop_timer_stop(&c->cmd_timer);
    if (c->is_freeing)
        return;
    log_down(c, reason);
    schedule_reconnect(c);
}

static void ev_set(struct redis_client *c, unsigned want)
{
    c->want = want;
    if (c->ac)
        loop_io_set(&c->io, want);
}
static void ev_add_read(void *p) { struct redis_client *c = p; ev_set(c, c->want | LOOP_READ); }
static void ev_del_read(void *p) { struct redis_client *c = p; ev_set(c, c->want & ~(unsigned)LOOP_READ); }
static void ev_add_write(void *p) { struct redis_client *c = p; ev_set(c, c->want | LOOP_WRITE); }
static void ev_del_write(void *p) { struct redis_client *c = p; ev_set(c, c->want & ~(unsigned)LOOP_WRITE); }

static void io_cb(struct loop_io *io, unsigned events)
{
    struct redis_client *c = io->data;
    redisAsyncContext *ac = c->ac;
    c->depth++;
    if ((events & LOOP_READ) && ac)
        redisAsyncHandleRead(ac);
    /* The read may have torn the context down (EOF, error, a callback
     * freeing the client): only the current one is touched. */
    if ((events & LOOP_WRITE) && c->ac == ac && ac && !c->is_ac_dying)
        redisAsyncHandleWrite(ac);
    c->depth--;
    maybe_free(c);
}

static void internal_cb(struct redis_client *c, redisReply *r, const char *what)
{
    if (r && r->type != REDIS_REPLY_ERROR)
        return;
    if (r) {
        log_down(c, r->str ? r->str : what);
        /* A wrong password or db will not fix itself quickly: back off. */
        drop_connection(c);
    }
}

/* hiredis reply callback for every command. */
static void reply_cb(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct redis_req *q = privdata;
    struct redis_client *c = q->c;
    redisReply *r = reply;
    int err = 0;
    pending_remove(c, q);
    if (!r) {
        /* The context is going away; nothing more goes out on it. */
        c->is_up = false;
        c->is_ac_dying = true;
        if (q->is_timed_out)
            err = -ETIMEDOUT;
        else if (ac->err == REDIS_ERR_PROTOCOL)
            err = -EPROTO;
        else
            err = -ENOTCONN;
    }
    if (q->is_internal) {
        internal_cb(c, r, "AUTH/SELECT failed");
    } else if (!c->is_freeing) {
        count_result(err, r);
        c->depth++;
        q->cb(err, r, q->arg);
        c->depth--;
    }
    free(q);
}

static int send_internal(struct redis_client *c, int argc, const char **argv)
{
    struct redis_req *q = calloc(1, sizeof *q);
    if (!q)
        return -ENOMEM;
    q->c = c;
    q->is_internal = true;
    q->deadline_ms = loop_now_ms(c->loop) + c->command_timeout_ms;
    if (redisAsyncCommandArgv(c->ac, reply_cb, q, argc, argv, NULL) != REDIS_OK) {
        free(q);
        return -ENOMEM;
    }
    pending_push(c, q);
    if (!loop_timer_is_active(&c->cmd_timer))
        loop_timer_start(&c->cmd_timer, c->command_timeout_ms);
    return 0;
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    struct redis_client *c = ac->data;
    if (status != REDIS_OK)
        return; /* hiredis frees the context next: ev_cleanup schedules a retry */
    loop_timer_stop(&c->conn_timer);
    c->is_up = true;
    c->backoff_ms = REDIS_BACKOFF_MIN_MS;
    /* AUTH and SELECT go first on the pipeline, so every user command runs
     * authenticated and on the right database even though we are "up" now. */
    if (c->password) {
        const char *argv[3] = { "AUTH", c->user ? c->user : c->password, c->password };
        if (send_internal(c, c->user ? 3 : 2, argv) != 0)
            goto fail;
    }
    if (c->db != 0) {
        char db[16];
        snprintf(db, sizeof db, "%d", c->db);
        const char *argv[2] = { "SELECT", db };
        if (send_internal(c, 2, argv) != 0)
            goto fail;
    }
    if (c->log_state != REDIS_LOG_UP)
        log_info("redis connected", LOG_STR("host", c->host), LOG_INT("port", c->port),
                 LOG_INT("db", c->db));
    c->log_state = REDIS_LOG_UP;
    return;
fail:
    log_down(c, "out of memory");
    drop_connection(c);
}

static void start_connect(struct redis_client *c)
{
    redisAsyncContext *ac = redisAsyncConnect(c->host, c->port);
    if (!ac || ac->err) {
        char reason[128];
        snprintf(reason, sizeof reason, "%s", ac ? ac->errstr : "out of memory");
        if (ac)
            redisAsyncFree(ac);
        log_down(c, reason);
        schedule_reconnect(c);
        return;
    }
    c->ac = ac;
    c->is_ac_dying = false;
    ac->data = c;
    ac->ev.data = c;
    ac->ev.addRead = ev_add_read;
    ac->ev.delRead = ev_del_read;
    ac->ev.addWrite = ev_add_write;
    ac->ev.delWrite = ev_del_write;
    ac->ev.cleanup = ev_cleanup;
    redisAsyncSetConnectCallback(ac, on_connect);
    loop_io_init(c->loop, &c->io, ac->c.fd, io_cb, c);
    /* hiredis 0.14 notices the connect on the first writable event; with no
     * command queued it would never ask for one. */
    ev_set(c, LOOP_WRITE);
    loop_timer_start(&c->conn_timer, c->connect_timeout_ms);
}

static void conn_timer_cb(struct loop_timer *t)
{
    struct redis_client *c = t->data;
    if (!c->ac) {
        start_connect(c);
        return;
    }
    if (!c->is_up) {
        log_down(c, "connect timeout");
        c->depth++;
        drop_connection(c); /* ev_cleanup schedules the next try */
        c->depth--;
        maybe_free(c);
    }
}

static void cmd_timer_cb(struct loop_timer *t)
{
    struct redis_client *c = t->data;
    uint64_t now = loop_now_ms(c->loop);
    struct redis_req *q = c->pending.next;
    if (q == &c->pending)
        return;
    if (q->deadline_ms > now) {
        loop_timer_start(&c->cmd_timer, q->deadline_ms - now);
        return;
    }
    /* Deadlines grow along the FIFO: mark the expired prefix. */
    for (; q != &c->pending && q->deadline_ms <= now; q = q->next)
        q->is_timed_out = true;
    log_warn("redis command timed out; reconnecting", LOG_STR("host", c->host),
             LOG_INT("port", c->port), LOG_UINT("timeout_ms", c->command_timeout_ms));
    c->log_state = REDIS_LOG_DOWN;
    c->depth++;
    drop_connection(c);
    c->depth--;
    maybe_free(c);
}

/* ---- public API ------------------------------------------------------------ */

struct redis_client *redis_client_new(struct loop *l, const struct redis_config *cfg)
{
    pthread_once(&metrics_once, metrics_init);
    if (!l || !cfg)
        return NULL;
    struct redis_client *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    const char *why = parse_url(c, cfg->url);
    if (why) {
        log_error("invalid Redis URL", LOG_STR("reason", why));
        free(c->user);
        free(c->password);
        free(c);
        return NULL;
    }
    c->loop = l;
    c->connect_timeout_ms = cfg->connect_timeout_ms ? cfg->connect_timeout_ms : 1000;
    c->command_timeout_ms = cfg->command_timeout_ms ? cfg->command_timeout_ms : 1000;
    c->max_pending = cfg->max_pending ? cfg->max_pending : 10000;
    c->pending.next = c->pending.prev = &c->pending;
    c->backoff_ms = REDIS_BACKOFF_MIN_MS;
    loop_timer_init(l, &c->conn_timer, conn_timer_cb, c);
    loop_timer_init(l, &c->cmd_timer, cmd_timer_cb, c);
    start_connect(c);
    return c;
}

static void finish_free(void *data)
{
    struct redis_client *c = data;
    if (c->depth > 0)
        return; /* re-deferred by maybe_free when the last frame unwinds */
    if (c->ac && !c->is_ac_dying) {
        c->is_ac_dying = true;
        redisAsyncFree(c->ac); /* NULL replies are dropped: is_freeing */
    }
    loop_timer_stop(&c->conn_timer);
    loop_timer_stop(&c->cmd_timer);
    loop_defer_cancel(c->loop, &c->fail_defer);
    struct redis_req *q = c->failed_head;
    while (q) {
        struct redis_req *next = q->next;
        free(q);
        q = next;
    }
    free(c->user);
    free(c->password);
    free(c);
}

void redis_client_free(struct redis_client *c)
{
    if (!c || c->is_freeing)
        return;
    c->is_freeing = true;
    loop_timer_stop(&c->conn_timer);
    loop_timer_stop(&c->cmd_timer);
    if (c->ac && !c->is_ac_dying) {
        /* Inside a hiredis callback this only flags the context; hiredis
         * frees it (and calls ev_cleanup) once the callback returns. */
        c->is_ac_dying = true;
        redisAsyncFree(c->ac);
    }
    if (c->depth == 0)
        finish_free(c);
    /* else: maybe_free defers finish_free when the outermost frame returns */
}

bool redis_is_connected(const struct redis_client *c)
{
    return c && c->is_up;
}

static struct redis_req *req_new(struct redis_client *c, redis_cb cb, void *arg)
{
    struct redis_req *q = calloc(1, sizeof *q);
    if (q) {
        q->c = c;
        q->cb = cb;
        q->arg = arg;
    }
    return q;
}

/* Common tail of both command forms once hiredis has taken the command. */
static void sent(struct redis_client *c, struct redis_req *q)
{
    q->deadline_ms = loop_now_ms(c->loop) + c->command_timeout_ms;
    pending_push(c, q);
    if (!loop_timer_is_active(&c->cmd_timer))
        loop_timer_start(&c->cmd_timer, c->command_timeout_ms);
}

int redis_command_argv(struct redis_client *c, redis_cb cb, void *arg, int argc,
                       const char **argv, const size_t *argvlen)
{
    if (!c || !cb || argc <= 0 || !argv || c->is_freeing)
        return -EINVAL;
    struct redis_req *q = req_new(c, cb, arg);
    if (!q)
        return -ENOMEM;
    if (!c->is_up || !c->ac || c->is_ac_dying)
        return fail_later(c, q, -ENOTCONN);
    if (c->npending >= c->max_pending)
        return fail_later(c, q, -ENOBUFS);
    if (redisAsyncCommandArgv(c->ac, reply_cb, q, argc, argv, argvlen) != REDIS_OK) {
        free(q);
        return -ENOMEM;
    }
    sent(c, q);
    return 0;
}

int redis_command(struct redis_client *c, redis_cb cb, void *arg, const char *fmt, ...)
{
    if (!c || !cb || !fmt || c->is_freeing)
        return -EINVAL;
    struct redis_req *q = req_new(c, cb, arg);
    if (!q)
        return -ENOMEM;
    if (!c->is_up || !c->ac || c->is_ac_dying)
        return fail_later(c, q, -ENOTCONN);
    if (c->npending >= c->max_pending)
        return fail_later(c, q, -ENOBUFS);
    va_list ap;
    va_start(ap, fmt);
    int rc = redisvAsyncCommand(c->ac, reply_cb, q, fmt, ap);
    va_end(ap);
    if (rc != REDIS_OK) {
        free(q);
        return -EINVAL; /* the context is up, so the format was refused (or OOM) */
    }
    sent(c, q);
    return 0;
}
