#include "core/http1_client.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define READ_CHUNK 16384
#define MAX_RESPONSE_HEADERS 100

enum cconn_state { CC_CONNECTING, CC_HANDSHAKE, CC_ACTIVE, CC_IDLE };

struct pool {
    struct pool *next;
    struct net_addr addr;
    char key[160];
    struct cconn *idle; /* LIFO: the most recently used is the warmest */
    uint32_t nidle;
};

struct cconn {
    struct http1_client *cl;
    struct pool *pool;
    struct cconn *next_idle, *prev_idle;
    struct sock sock;
    struct loop_io io;
    struct loop_timer timer; /* connect timeout, or idle lifetime */
    struct loop_defer defer;
    enum cconn_state state;
    struct http1_client_call *call;
    struct buf out;
    struct buf in;
    size_t head_len, in_pos, body_len;
    const char *head_base; /* where the head was parsed (its views point there) */
    struct http1_response resp;
    struct http1_header headers[MAX_RESPONSE_HEADERS];
    struct http1_chunked chunked;
    bool is_reused;
    bool got_bytes;
    bool has_head;
    bool is_closed;
};

struct http1_client_call {
    struct http1_client *cl;
    struct http1_client_call *prev, *next; /* calls in flight */
    struct pool *pool;
    struct cconn *conn;
    struct buf req;          /* the serialised request, kept for a retry */
    struct loop_timer timer; /* whole-request deadline */
    struct loop_defer defer; /* error delivered outside http1_client_send */
    int deferred_err;
    bool is_head;
    bool is_idempotent;
    bool has_retried;
    int (*wrap)(struct sock *s, void *arg);
    void *wrap_arg;
    http1_client_cb cb;
    void *arg;
};

struct http1_client {
    struct loop *loop;
    struct http1_client_config cfg;
    struct pool *pools;
    struct http1_client_stats stats;
    struct http1_client_call *calls;
    struct loop_defer free_defer;
    int callback_depth;   /* > 0 while a user callback runs */
    bool is_free_pending; /* http1_client_free was called from a callback */
};

static void cconn_io_cb(struct loop_io *io, unsigned events);
static void cconn_close(struct cconn *cc);
static void call_finish(struct http1_client_call *call, int err, const struct http1_client_response *resp);
static void call_start_conn(struct http1_client_call *call, bool allow_reuse);

/* ---- URLs ------------------------------------------------------------------- */

int http1_url_parse(struct str url, struct http1_url *out)
{
    memset(out, 0, sizeof *out);
    size_t skip;
    if (url.n >= 7 && str_eq_nocase(str_make(url.p, 7), STR_LIT("http://"))) {
        out->scheme = str_make(url.p, 4);
        out->port = 80;
        skip = 7;
    } else if (url.n >= 8 && str_eq_nocase(str_make(url.p, 8), STR_LIT("https://"))) {
        out->scheme = str_make(url.p, 5);
        out->port = 443;
        out->is_tls = true;
        skip = 8;
    } else {
        return -EINVAL;
    }
    const char *p = url.p + skip, *end = url.p + url.n;
    const char *auth_end = p;
    while (auth_end < end && *auth_end != '/' && *auth_end != '?' && *auth_end != '#')
        auth_end++;
    struct str auth = str_make(p, (size_t)(auth_end - p));
    if (memchr(auth.p, '@', auth.n))
        return -EINVAL; /* userinfo: never in our URLs, and a credential leak in logs */
    const char *port_colon = NULL;
    if (auth.n && auth.p[0] == '[') {
        const char *rb = memchr(auth.p, ']', auth.n);
        if (!rb)
            return -EINVAL;
        out->host = str_make(auth.p + 1, (size_t)(rb - auth.p - 1));
        if (rb + 1 < auth_end) {
            if (rb[1] != ':')
                return -EINVAL;
            port_colon = rb + 1;
        }
    } else {
        port_colon = memchr(auth.p, ':', auth.n);
        out->host = str_make(auth.p, port_colon ? (size_t)(port_colon - auth.p) : auth.n);
    }
    if (out->host.n == 0)
        return -EINVAL;
    if (port_colon) {
        uint64_t port;
        struct str ps = str_make(port_colon + 1, (size_t)(auth_end - port_colon - 1));
        if (ps.n == 0 || ps.n > 5 || str_to_u64(ps, &port) || port == 0 || port > 65535)
            return -EINVAL;
        out->port = (uint16_t)port;
    }
    const char *frag = memchr(auth_end, '#', (size_t)(end - auth_end));
    const char *path_end = frag ? frag : end;
    out->path = auth_end < path_end ? str_make(auth_end, (size_t)(path_end - auth_end)) : STR_LIT("/");
    if (out->path.p[0] == '?') /* "http://h?x" → "/?x" is not expressible as a view */
        return -EINVAL;
    return 0;
}

/* ---- pools ------------------------------------------------------------------- */

static struct pool *pool_get(struct http1_client *cl, const struct net_addr *addr, const char *key)
{
    const char *k = key ? key : "";
    for (struct pool *p = cl->pools; p; p = p->next)
        if (p->addr.len == addr->len && memcmp(&p->addr.ss, &addr->ss, addr->len) == 0 && strcmp(p->key, k) == 0)
            return p;
    struct pool *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->addr = *addr;
    snprintf(p->key, sizeof p->key, "%s", k);
    p->next = cl->pools;
    cl->pools = p;
    return p;
}

static void pool_remove_idle(struct cconn *cc)
{
    struct pool *p = cc->pool;
    if (cc->prev_idle)
        cc->prev_idle->next_idle = cc->next_idle;
    else
        p->idle = cc->next_idle;
    if (cc->next_idle)
        cc->next_idle->prev_idle = cc->prev_idle;
    cc->next_idle = cc->prev_idle = NULL;
    p->nidle--;
    cc->cl->stats.idle--;
}

static void idle_timer_cb(struct loop_timer *t)
{
    struct cconn *cc = t->data;
    if (cc->state == CC_CONNECTING || cc->state == CC_HANDSHAKE) {
        /* Connect timeout: the call sees it as a timeout. */
        struct http1_client_call *call = cc->call;
        cc->cl->stats.timeouts++;
        cconn_close(cc);
        if (call)
            call_finish(call, -ETIMEDOUT, NULL);
        return;
    }
    cconn_close(cc);
}

static void cconn_free_cb(void *arg)
{
    struct cconn *cc = arg;
    buf_free(&cc->in);
    buf_free(&cc->out);
    free(cc);
}

static void cconn_close(struct cconn *cc)
{
    if (cc->is_closed)
        return;
    cc->is_closed = true;
    if (cc->state == CC_IDLE)
        pool_remove_idle(cc);
    if (cc->call) {
        cc->call->conn = NULL;
        cc->call = NULL;
    }
    loop_io_close(&cc->io);
    loop_timer_stop(&cc->timer);
    sock_close(&cc->sock);
    loop_defer(cc->cl->loop, &cc->defer, cconn_free_cb, cc);
}

static void cconn_release(struct cconn *cc)
{
    struct http1_client *cl = cc->cl;
    struct pool *p = cc->pool;
    cc->call = NULL;
    if (p->nidle >= cl->cfg.max_idle_per_upstream) {
        cconn_close(cc);
        return;
    }
    buf_free(&cc->in);
    buf_free(&cc->out);
    cc->state = CC_IDLE;
    cc->has_head = false;
    cc->next_idle = p->idle;
    cc->prev_idle = NULL;
    if (p->idle)
        p->idle->prev_idle = cc;
    p->idle = cc;
    p->nidle++;
    cl->stats.idle++;
    /* Watch for the server closing it while idle. */
    loop_io_set(&cc->io, LOOP_READ);
    loop_timer_start(&cc->timer, cl->cfg.idle_timeout_ms);
}

/* ---- calls ------------------------------------------------------------------- */

static void call_free(struct http1_client_call *call)
{
    struct http1_client *cl = call->cl;
    if (call->prev)
        call->prev->next = call->next;
    else
        cl->calls = call->next;
    if (call->next)
        call->next->prev = call->prev;
    loop_timer_stop(&call->timer);
    loop_defer_cancel(call->cl->loop, &call->defer);
    buf_free(&call->req);
    free(call);
}

static void call_finish(struct http1_client_call *call, int err, const struct http1_client_response *resp)
{
    if (err)
        call->cl->stats.errors++;
    if (call->conn) {
        call->conn->call = NULL;
        call->conn = NULL;
    }
    http1_client_cb cb = call->cb;
    void *arg = call->arg;
    struct http1_client *cl = call->cl;
    call_free(call);
    if (cb) {
        cl->callback_depth++;
        cb(err, resp, arg);
        cl->callback_depth--;
    }
}

static void deferred_error_cb(void *arg)
{
    struct http1_client_call *call = arg;
    call_finish(call, call->deferred_err, NULL);
}

static void call_fail_later(struct http1_client_call *call, int err)
{
    call->deferred_err = err;
    loop_defer(call->cl->loop, &call->defer, deferred_error_cb, call);
}

static void call_timer_cb(struct loop_timer *t)
{
    struct http1_client_call *call = t->data;
    call->cl->stats.timeouts++;
    if (call->conn)
        cconn_close(call->conn);
    call_finish(call, -ETIMEDOUT, NULL);
}

/* A failure on the connection: retry once on a fresh connection when the
 * server closed a reused connection before answering (the keep-alive race). */
static void cconn_fail(struct cconn *cc, int err)
{
    struct http1_client_call *call = cc->call;
    bool retry = call && cc->is_reused && !cc->got_bytes && call->is_idempotent && !call->has_retried;
    cconn_close(cc);
    if (!call)
        return;
    if (retry) {
        call->has_retried = true;
        cc->cl->stats.retries++;
        call_start_conn(call, false);
        return;
    }
    call_finish(call, err, NULL);
}

static void cconn_flush(struct cconn *cc)
{
    while (buf_len(&cc->out)) {
        struct iovec iov = { (void *)buf_rptr(&cc->out), buf_len(&cc->out) };
        ssize_t w = sock_writev(&cc->sock, &iov, 1);
        if (w == -EAGAIN) {
            loop_io_set(&cc->io, cc->sock.want | LOOP_READ);
            return;
        }
        if (w < 0) {
            cconn_fail(cc, w == -EPIPE ? -ECONNRESET : (int)w);
            return;
        }
        buf_consume(&cc->out, (size_t)w);
    }
    loop_io_set(&cc->io, LOOP_READ);
}

static void cconn_begin(struct cconn *cc)
{
    struct http1_client_call *call = cc->call;
    cc->state = CC_ACTIVE;
    loop_timer_stop(&cc->timer);
    cc->head_len = cc->in_pos = cc->body_len = 0;
    cc->has_head = false;
    cc->got_bytes = false;
    buf_init(&cc->in, cc->cl->cfg.max_response_body + 64 * 1024 + 2 * READ_CHUNK);
    buf_init(&cc->out, SIZE_MAX / 2);
    if (buf_append(&cc->out, buf_rptr(&call->req), buf_len(&call->req)) < 0) {
        cconn_fail(cc, -ENOMEM);
        return;
    }
    cconn_flush(cc);
}

static void deliver(struct cconn *cc)
{
    struct http1_client_call *call = cc->call;
    /* The head's views point into cc->in; a read after the head may have
     * moved the buffer (it grows): parse the head again where it is now. */
    if (cc->head_base != cc->in.data + cc->in.rpos &&
        http1_parse_response(buf_rptr(&cc->in), cc->head_len, NULL, call->is_head, &cc->resp, cc->headers,
                             MAX_RESPONSE_HEADERS) != (int)cc->head_len) {
        cconn_fail(cc, -EPROTO);
        return;
    }
    struct http1_client_response r = {
        .status = cc->resp.status,
        .headers = cc->resp.headers,
        .nheaders = cc->resp.nheaders,
        .body = str_make(cc->in.data + cc->in.rpos + cc->head_len, cc->body_len),
    };
    bool reusable = cc->resp.keep_alive && cc->resp.body_kind != HTTP1_BODY_UNTIL_CLOSE &&
                    buf_len(&cc->in) == cc->in_pos;
    cc->call = NULL;
    call->conn = NULL;
    /* The response views live in cc->in until the callback returns. */
    loop_io_set(&cc->io, 0);
    struct http1_client *cl = cc->cl;
    call_finish(call, 0, &r);
    if (cl->is_free_pending) {
        cconn_close(cc); /* the client is going away: nothing goes back to a pool */
        return;
    }
    if (cc->is_closed)
        return;
    if (reusable)
        cconn_release(cc);
    else
        cconn_close(cc);
}

/* 1: complete, 0: more needed, <0: error. */
static int parse_input(struct cconn *cc, bool at_eof)
{
    struct http1_client_call *call = cc->call;
    uint64_t max_body = cc->cl->cfg.max_response_body;
    for (;;) {
        if (!cc->has_head) {
            int rc = http1_parse_response(buf_rptr(&cc->in), buf_len(&cc->in), NULL, call->is_head, &cc->resp,
                                          cc->headers, MAX_RESPONSE_HEADERS);
            if (rc == HTTP1_INCOMPLETE)
                return at_eof ? -ECONNRESET : 0;
            if (rc < 0)
                return -EPROTO;
            if (cc->resp.status >= 100 && cc->resp.status < 200) {
                buf_consume(&cc->in, (size_t)rc); /* interim response: skip */
                continue;
            }
            cc->has_head = true;
            cc->head_base = cc->in.data + cc->in.rpos;
            cc->head_len = cc->in_pos = (size_t)rc;
            cc->body_len = 0;
            if (cc->resp.body_kind == HTTP1_BODY_LENGTH && cc->resp.content_length > max_body)
                return -EMSGSIZE;
            if (cc->resp.body_kind == HTTP1_BODY_CHUNKED)
                http1_chunked_init(&cc->chunked);
        }
        break;
    }
    char *base = cc->in.data + cc->in.rpos;
    size_t len = buf_len(&cc->in);
    switch (cc->resp.body_kind) {
    case HTTP1_BODY_NONE:
        return 1;
    case HTTP1_BODY_LENGTH:
        if (len - cc->head_len < cc->resp.content_length)
            return at_eof ? -ECONNRESET : 0;
        cc->body_len = (size_t)cc->resp.content_length;
        cc->in_pos = cc->head_len + cc->body_len;
        return 1;
    case HTTP1_BODY_UNTIL_CLOSE:
        cc->body_len = len - cc->head_len;
        cc->in_pos = len;
        if (cc->body_len > max_body)
            return -EMSGSIZE;
        return at_eof ? 1 : 0;
    case HTTP1_BODY_CHUNKED:
        while (cc->in_pos < len) {
            struct str data;
            size_t used = 0;
            int rc = http1_chunked_feed(&cc->chunked, base + cc->in_pos, len - cc->in_pos, &data, &used);
            cc->in_pos += used;
            if (rc == HTTP1_CHUNK_DATA) {
                if (cc->body_len + data.n > max_body)
                    return -EMSGSIZE;
                memmove(base + cc->head_len + cc->body_len, data.p, data.n);
                cc->body_len += data.n;
                continue;
            }
            if (rc == HTTP1_CHUNK_DONE) {
                /* Squeeze out the encoding so in_pos marks the message end. */
                size_t body_end = cc->head_len + cc->body_len;
                memmove(base + body_end, base + cc->in_pos, len - cc->in_pos);
                cc->in.wpos -= cc->in_pos - body_end;
                cc->in_pos = body_end;
                return 1;
            }
            if (rc == HTTP1_CHUNK_NEED_MORE)
                break;
            return -EPROTO;
        }
        size_t body_end = cc->head_len + cc->body_len;
        if (cc->in_pos > body_end) {
            memmove(base + body_end, base + cc->in_pos, len - cc->in_pos);
            cc->in.wpos -= cc->in_pos - body_end;
            cc->in_pos = body_end;
        }
        return at_eof ? -ECONNRESET : 0;
    }
    return -EPROTO;
}

static void cconn_read(struct cconn *cc)
{
    for (int i = 0; i < 4 && !cc->is_closed; i++) {
        int rc = buf_reserve(&cc->in, READ_CHUNK);
        if (rc < 0) {
            cconn_fail(cc, rc == -ENOBUFS ? -EMSGSIZE : rc);
            return;
        }
        size_t room = buf_writable(&cc->in);
        ssize_t n = sock_read(&cc->sock, buf_wptr(&cc->in), room);
        if (n == -EAGAIN) {
            loop_io_set(&cc->io, cc->sock.want | (buf_len(&cc->out) ? LOOP_WRITE : 0));
            return;
        }
        bool at_eof = n <= 0;
        if (n > 0) {
            buf_commit(&cc->in, (size_t)n);
            cc->got_bytes = true;
        } else if (n < 0 && !cc->got_bytes) {
            cconn_fail(cc, n == -EPIPE ? -ECONNRESET : (int)n);
            return;
        }
        int prc = parse_input(cc, at_eof);
        if (prc == 1) {
            deliver(cc);
            return;
        }
        if (prc < 0 || at_eof) {
            cconn_fail(cc, prc < 0 ? prc : -ECONNRESET);
            return;
        }
        if ((size_t)n < room && cc->sock.ops == &sock_plain_ops)
            return; /* TCP drained; TLS may still hold decrypted records */
    }
}

static void cconn_io_cb(struct loop_io *io, unsigned events)
{
    struct cconn *cc = io->data;
    if (cc->is_closed)
        return;
    switch (cc->state) {
    case CC_CONNECTING: {
        int rc = net_connect_result(cc->sock.fd);
        if (rc < 0) {
            cconn_fail(cc, rc);
            return;
        }
        if (cc->call && cc->call->wrap) {
            if (cc->call->wrap(&cc->sock, cc->call->wrap_arg) < 0) {
                cconn_fail(cc, -ECONNREFUSED);
                return;
            }
            cc->state = CC_HANDSHAKE;
        } else {
            cconn_begin(cc);
            return;
        }
    }
        /* fallthrough */
    case CC_HANDSHAKE: {
        int rc = sock_handshake(&cc->sock);
        if (rc == -EAGAIN) {
            loop_io_set(&cc->io, cc->sock.want);
            return;
        }
        if (rc < 0) {
            /* A TLS handshake that failed: the peer's certificate was not
             * trusted or not the identity expected, or TLS itself failed. */
            cconn_fail(cc, -EKEYREJECTED);
            return;
        }
        cconn_begin(cc);
        return;
    }
    case CC_ACTIVE:
        if ((events & LOOP_WRITE) && buf_len(&cc->out))
            cconn_flush(cc);
        if (!cc->is_closed && (events & LOOP_READ))
            cconn_read(cc);
        return;
    case CC_IDLE:
        /* Readable while idle: the server closed it (or sent garbage). */
        cconn_close(cc);
        return;
    }
}

static void call_start_conn(struct http1_client_call *call, bool allow_reuse)
{
    struct http1_client *cl = call->cl;
    struct pool *p = call->pool;
    struct cconn *cc = allow_reuse ? p->idle : NULL;

    if (cc) {
        pool_remove_idle(cc);
        loop_timer_stop(&cc->timer);
        cc->is_reused = true;
        cc->call = call;
        call->conn = cc;
        cl->stats.reuses++;
        cconn_begin(cc);
        return;
    }
    cc = calloc(1, sizeof *cc);
    if (!cc) {
        call_fail_later(call, -ENOMEM);
        return;
    }
    int fd;
    int rc = net_connect(&p->addr, &fd);
    if (rc < 0 && rc != -EINPROGRESS) {
        free(cc);
        call_fail_later(call, rc);
        return;
    }
    cl->stats.connects++;
    cc->cl = cl;
    cc->pool = p;
    cc->call = call;
    call->conn = cc;
    sock_init_plain(&cc->sock, fd);
    buf_init(&cc->in, 0);
    buf_init(&cc->out, 0);
    loop_io_init(cl->loop, &cc->io, fd, cconn_io_cb, cc);
    loop_timer_init(cl->loop, &cc->timer, idle_timer_cb, cc);
    cc->state = CC_CONNECTING;
    loop_io_set(&cc->io, LOOP_WRITE);
    loop_timer_start(&cc->timer, cl->cfg.connect_timeout_ms);
}

static bool method_is_idempotent(struct str m)
{
    return str_eq(m, STR_LIT("GET")) || str_eq(m, STR_LIT("HEAD")) || str_eq(m, STR_LIT("OPTIONS")) ||
           str_eq(m, STR_LIT("PUT")) || str_eq(m, STR_LIT("DELETE")) || str_eq(m, STR_LIT("TRACE"));
}

static int serialise(struct buf *b, const struct http1_client_request *r)
{
    int rc = 0;
    rc |= buf_append_str(b, r->method);
    rc |= buf_append(b, " ", 1);
    rc |= buf_append_str(b, r->target.n ? r->target : STR_LIT("/"));
    rc |= buf_append(b, " HTTP/1.1\r\nHost: ", 17);
    rc |= buf_append_str(b, r->host);
    rc |= buf_append(b, "\r\n", 2);
    for (size_t i = 0; i < r->nheaders; i++) {
        rc |= buf_append_str(b, r->headers[i].name);
        rc |= buf_append(b, ": ", 2);
        rc |= buf_append_str(b, r->headers[i].value);
        rc |= buf_append(b, "\r\n", 2);
    }
    if (r->body.n || !method_is_idempotent(r->method)) {
        rc |= buf_append(b, "Content-Length: ", 16);
        rc |= buf_append_u64(b, r->body.n);
        rc |= buf_append(b, "\r\n", 2);
    }
    rc |= buf_append(b, "\r\n", 2);
    rc |= buf_append_str(b, r->body);
    return rc ? -ENOMEM : 0;
}

static bool has_crlf(struct str s) { return memchr(s.p, '\r', s.n) || memchr(s.p, '\n', s.n); }

int http1_client_send(struct http1_client *cl, const struct http1_client_request *req, http1_client_cb cb,
                      void *arg, struct http1_client_call **out)
{
    if (!req->method.n || has_crlf(req->method) || has_crlf(req->target) || has_crlf(req->host))
        return -EINVAL;
    for (size_t i = 0; i < req->nheaders; i++)
        if (!req->headers[i].name.n || has_crlf(req->headers[i].name) || has_crlf(req->headers[i].value))
            return -EINVAL; /* header injection */
    struct http1_client_call *call = calloc(1, sizeof *call);
    if (!call)
        return -ENOMEM;
    call->cl = cl;
    call->cb = cb;
    call->arg = arg;
    call->wrap = req->wrap;
    call->wrap_arg = req->wrap_arg;
    call->is_head = str_eq(req->method, STR_LIT("HEAD"));
    call->is_idempotent = method_is_idempotent(req->method);
    buf_init(&call->req, SIZE_MAX / 2);
    call->pool = pool_get(cl, &req->addr, req->pool_key);
    if (!call->pool || serialise(&call->req, req) < 0) {
        buf_free(&call->req);
        free(call);
        return -ENOMEM;
    }
    loop_timer_init(cl->loop, &call->timer, call_timer_cb, call);
    call->next = cl->calls;
    if (cl->calls)
        cl->calls->prev = call;
    cl->calls = call;
    loop_timer_start(&call->timer, req->timeout_ms ? req->timeout_ms : cl->cfg.request_timeout_ms);
    if (out)
        *out = call;
    call_start_conn(call, true);
    return 0;
}

void http1_client_cancel(struct http1_client_call *call)
{
    if (call->conn)
        cconn_close(call->conn);
    call_free(call);
}

struct http1_client *http1_client_new(struct loop *l, const struct http1_client_config *cfg)
{
    struct http1_client *cl = calloc(1, sizeof *cl);
    if (!cl)
        return NULL;
    cl->loop = l;
    if (cfg)
        cl->cfg = *cfg;
    if (!cl->cfg.connect_timeout_ms)
        cl->cfg.connect_timeout_ms = 2000;
    if (!cl->cfg.request_timeout_ms)
        cl->cfg.request_timeout_ms = 30000;
    if (!cl->cfg.idle_timeout_ms)
        cl->cfg.idle_timeout_ms = 50000;
    if (!cl->cfg.max_idle_per_upstream)
        cl->cfg.max_idle_per_upstream = 32;
    if (!cl->cfg.max_response_body)
        cl->cfg.max_response_body = 16 * 1024 * 1024;
    return cl;
}

static void client_destroy(void *arg)
{
    struct http1_client *cl = arg;
    struct pool *p = cl->pools;
    while (p) {
        struct pool *next = p->next;
        while (p->idle)
            cconn_close(p->idle);
        free(p);
        p = next;
    }
    free(cl);
}

void http1_client_free(struct http1_client *cl)
{
    if (!cl)
        return;
    while (cl->calls)
        http1_client_cancel(cl->calls);
    if (cl->callback_depth > 0) {
        /* Called from one of our callbacks: the code that ran it still uses
         * the client; finish after this batch of events. */
        for (struct pool *p = cl->pools; p; p = p->next)
            while (p->idle)
                cconn_close(p->idle);
        cl->is_free_pending = true;
        loop_defer(cl->loop, &cl->free_defer, client_destroy, cl);
        return;
    }
    client_destroy(cl);
}

const struct http1_client_stats *http1_client_stats(const struct http1_client *cl) { return &cl->stats; }
