#include "core/http1_server.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/json.h"
#include "core/rand.h"

/* Accept at most this many connections per wakeup so that a connection
 * storm cannot starve the connections we already have. */
#define ACCEPT_BATCH 64
/* Reads per wakeup per connection: level-triggered epoll brings us back. */
#define READS_PER_WAKEUP 4
/* Read granularity: one 16 KiB TLS record fits, as does a typical head. */
#define READ_CHUNK 16384
/* Lingering close (as NGINX): after an error reply, drain what the client
 * is still sending for up to 2 s / 256 KiB so that our close does not
 * turn into a RST that destroys the reply in flight. */
#define LINGER_MS 2000
#define LINGER_MAX_BYTES (256 * 1024)
/* After EMFILE/ENFILE, retry accepting after this pause. */
#define ACCEPT_RETRY_MS 100

enum conn_state {
    CS_HANDSHAKE,
    CS_IDLE,     /* between requests, nothing buffered */
    CS_HEAD,     /* reading the head */
    CS_BODY,     /* reading the body */
    CS_HANDLING, /* the handler has the exchange */
    CS_WRITING,  /* response being written */
    CS_LINGER,   /* response written, draining input before close */
};

struct listener {
    struct listener *next;
    struct loop_io io;
    struct http1_server *srv;
    struct loop_defer defer;
};

struct http1_conn {
    struct http1_server *srv;
    struct http1_conn *prev, *next;
    struct sock sock;
    struct loop_io io;
    struct loop_timer timer;
    struct loop_defer defer;       /* the deferred free */
    struct loop_defer input_defer; /* the next pipelined request */
    struct loop_defer read_defer;  /* more to read after the per-wakeup cap */
    enum conn_state state;
    struct buf rbuf;
    struct buf wbuf;
    struct buf wbody;
    size_t head_len;  /* parsed head bytes at the start of rbuf */
    size_t in_pos;    /* raw request bytes consumed so far (head + encoded body) */
    size_t body_len;  /* decoded body bytes, stored right after the head */
    size_t linger_bytes;
    struct http1_chunked chunked;
    /* The request in progress; NULL between requests, so that an idle
     * connection costs only this struct (about 400 bytes). */
    struct http1_exchange *x;
    struct net_addr peer;
    uint32_t nrequests;
    int status;          /* of the response being written */
    bool close_after;
    bool is_dispatched;  /* the handler saw x and it has not completed */
    bool is_closed;
    bool is_orphan;      /* closed, but the handler still owes an answer: memory kept */
};

struct http1_server {
    struct loop *loop;
    struct http1_server_config cfg;
    struct listener *listeners;
    struct http1_conn *conns;
    struct loop_timer accept_timer;
    struct loop_defer drained_defer;
    struct http1_server_stats stats;
    void (*on_drained)(void *arg);
    void *drained_arg;
    size_t rbuf_max;
    /* Buffers and arena chunks cycle through these instead of malloc/free:
     * 256 × (16 + 4 + 4) KiB = 6 MiB at most per loop. */
    struct buf_pool rpool, wpool;
    struct arena_pool apool;
    struct http1_exchange *free_exchanges; /* linked through ->user; ≤ 256 */
    struct http1_conn *orphans; /* closed connections whose handler has not answered */
    size_t nfree_exchanges;
    bool is_draining;
    bool is_accept_paused;
};

static void conn_io_cb(struct loop_io *io, unsigned events);
static void conn_timer_cb(struct loop_timer *t);
static void conn_close(struct http1_conn *c);
static void conn_process_input(struct http1_conn *c);
static void conn_flush(struct http1_conn *c);

/* ---- Date header cache ----------------------------------------------- */

void http1_format_date(char out[30])
{
    static __thread time_t cached_at;
    static __thread char cached[30];
    time_t now = time(NULL);
    if (now != cached_at) {
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(cached, sizeof cached, "%a, %d %b %Y %H:%M:%S GMT", &tm);
        cached_at = now;
    }
    memcpy(out, cached, 30);
}

/* ---- accept ------------------------------------------------------------ */

static void set_accepting(struct http1_server *s, bool on)
{
    for (struct listener *l = s->listeners; l; l = l->next)
        loop_io_set(&l->io, on ? LOOP_READ : 0);
}

static void conn_arm(struct http1_conn *c, uint32_t ms) { loop_timer_start(&c->timer, ms); }

static void accept_one(struct http1_server *s, int fd, const struct net_addr *peer)
{
    if (s->cfg.conn_open && !s->cfg.conn_open(peer, s->cfg.conn_arg)) {
        s->stats.refused_admission++;
        close(fd);
        return;
    }
    struct http1_conn *c = calloc(1, sizeof *c);
    if (!c) {
        if (s->cfg.conn_closed)
            s->cfg.conn_closed(peer, s->cfg.conn_arg);
        close(fd);
        return;
    }
    c->srv = s;
    sock_init_plain(&c->sock, fd);
    if (s->cfg.wrap && s->cfg.wrap(&c->sock, s->cfg.wrap_arg) < 0) {
        s->stats.refused_transport++;
        sock_close(&c->sock);
        free(c);
        if (s->cfg.conn_closed)
            s->cfg.conn_closed(peer, s->cfg.conn_arg);
        return;
    }
    c->peer = *peer;
    buf_init(&c->rbuf, s->rbuf_max);
    buf_init(&c->wbuf, SIZE_MAX / 2);
    buf_init(&c->wbody, SIZE_MAX / 2);
    loop_io_init(s->loop, &c->io, fd, conn_io_cb, c);
    loop_timer_init(s->loop, &c->timer, conn_timer_cb, c);
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
    s->stats.accepted++;
    s->stats.active++;
    if (c->sock.ops->handshake) {
        c->state = CS_HANDSHAKE;
        conn_arm(c, s->cfg.header_timeout_ms);
    } else {
        c->state = CS_IDLE;
        conn_arm(c, s->cfg.idle_timeout_ms);
    }
    /* Try the I/O first: with data already queued we save a wakeup. */
    conn_io_cb(&c->io, LOOP_READ);
}

static void accept_cb(struct loop_io *io, unsigned events)
{
    struct listener *l = io->data;
    struct http1_server *s = l->srv;
    (void)events;
    for (int i = 0; i < ACCEPT_BATCH; i++) {
        if (s->stats.active >= s->cfg.max_connections) {
            /* Leave the rest in the kernel's backlog until one closes. */
            s->is_accept_paused = true;
            set_accepting(s, false);
            return;
        }
        struct net_addr peer;
        int fd;
        int rc = net_accept(io->fd, &peer, &fd);
        if (rc == -EAGAIN || rc == -EINTR || rc == -ECONNABORTED)
            return;
        if (rc == -EMFILE || rc == -ENFILE || rc == -ENOBUFS || rc == -ENOMEM) {
            s->is_accept_paused = true;
            set_accepting(s, false);
            loop_timer_start(&s->accept_timer, ACCEPT_RETRY_MS);
            return;
        }
        if (rc < 0)
            return;
        accept_one(s, fd, &peer);
    }
}

static void accept_retry_cb(struct loop_timer *t)
{
    struct http1_server *s = t->data;
    if (s->is_draining || s->stats.active >= s->cfg.max_connections)
        return;
    s->is_accept_paused = false;
    set_accepting(s, true);
}

struct http1_server *http1_server_new(struct loop *l, const struct http1_server_config *cfg)
{
    struct http1_server *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->loop = l;
    s->cfg = *cfg;
    if (!s->cfg.drain_idle_ms)
        s->cfg.drain_idle_ms = 1000;
    /* Zero fields take the defaults, one by one. */
    if (!s->cfg.limits.max_request_line)
        s->cfg.limits.max_request_line = http1_default_limits.max_request_line;
    if (!s->cfg.limits.max_header_bytes)
        s->cfg.limits.max_header_bytes = http1_default_limits.max_header_bytes;
    if (!s->cfg.limits.max_headers)
        s->cfg.limits.max_headers = http1_default_limits.max_headers;
    if (!s->cfg.max_body)
        s->cfg.max_body = 1024 * 1024;
    if (!s->cfg.header_timeout_ms)
        s->cfg.header_timeout_ms = 10000;
    if (!s->cfg.body_timeout_ms)
        s->cfg.body_timeout_ms = 30000;
    if (!s->cfg.idle_timeout_ms)
        s->cfg.idle_timeout_ms = 60000;
    if (!s->cfg.write_timeout_ms)
        s->cfg.write_timeout_ms = 30000;
    if (!s->cfg.max_connections)
        s->cfg.max_connections = 10000;
    /* Head + decoded body + one read of encoded input not yet decoded. */
    s->rbuf_max = s->cfg.limits.max_header_bytes + s->cfg.max_body + 2 * READ_CHUNK;
    loop_timer_init(l, &s->accept_timer, accept_retry_cb, s);
    buf_pool_init(&s->rpool, READ_CHUNK, 256);
    buf_pool_init(&s->wpool, 4096, 256);
    arena_pool_init(&s->apool, 4096, 256);
    return s;
}

int http1_server_listen_fd(struct http1_server *s, int lfd)
{
    struct listener *l = calloc(1, sizeof *l);
    if (!l)
        return -ENOMEM;
    l->srv = s;
    loop_io_init(s->loop, &l->io, lfd, accept_cb, l);
    if (!s->is_accept_paused && !s->is_draining)
        loop_io_set(&l->io, LOOP_READ);
    l->next = s->listeners;
    s->listeners = l;
    return 0;
}

static void listener_free_cb(void *arg) { free(arg); }

/* deferred: called from inside the loop (a drain), where the listener's
 * io may still have an event later in this batch — free it after the
 * batch, as connections are. */
static void close_listeners_how(struct http1_server *s, bool deferred)
{
    struct listener *l = s->listeners;
    while (l) {
        struct listener *next = l->next;
        loop_io_close(&l->io);
        close(l->io.fd);
        if (deferred)
            loop_defer(s->loop, &l->defer, listener_free_cb, l);
        else
            free(l);
        l = next;
    }
    s->listeners = NULL;
    loop_timer_stop(&s->accept_timer);
}

static void close_listeners(struct http1_server *s) { close_listeners_how(s, false); }

const struct http1_server_stats *http1_server_stats(const struct http1_server *s) { return &s->stats; }

/* ---- connection lifecycle ---------------------------------------------- */

static void drained_cb(void *arg)
{
    struct http1_server *s = arg;
    if (s->on_drained && s->stats.active == 0) {
        void (*fn)(void *) = s->on_drained;
        s->on_drained = NULL;
        fn(s->drained_arg);
    }
}

static void conn_free_cb(void *arg) { free(arg); }

/* The exchange for the request starting now (from the server's free list). */
static struct http1_exchange *conn_exchange(struct http1_conn *c)
{
    struct http1_server *s = c->srv;
    if (c->x)
        return c->x;
    struct http1_exchange *x = s->free_exchanges;
    if (x) {
        s->free_exchanges = x->user;
        s->nfree_exchanges--;
    } else {
        x = malloc(sizeof *x);
        if (!x)
            return NULL;
    }
    memset(x, 0, sizeof *x);
    arena_init(&x->arena, 4096, 0);
    arena_set_pool(&x->arena, &s->apool);
    x->peer = c->peer;
    x->conn = c;
    x->sock = &c->sock;
    c->x = x;
    return x;
}

static void conn_drop_exchange(struct http1_conn *c)
{
    struct http1_server *s = c->srv;
    struct http1_exchange *x = c->x;
    if (!x)
        return;
    c->x = NULL;
    arena_free(&x->arena);
    if (s->nfree_exchanges < 256) {
        x->user = s->free_exchanges;
        s->free_exchanges = x;
        s->nfree_exchanges++;
    } else {
        free(x);
    }
}

static void conn_release_memory(struct http1_conn *c)
{
    struct http1_server *s = c->srv;
    buf_give(&c->rbuf, &s->rpool);
    buf_give(&c->wbuf, &s->wpool);
    buf_free(&c->wbody);
    conn_drop_exchange(c);
}

static void finish_exchange(struct http1_conn *c, int status)
{
    if (!c->is_dispatched)
        return;
    c->is_dispatched = false;
    if (c->srv->cfg.on_complete)
        c->srv->cfg.on_complete(c->x, status, c->srv->cfg.handler_arg);
}

static void conn_close(struct http1_conn *c)
{
    struct http1_server *s = c->srv;
    if (c->is_closed)
        return;
    c->is_closed = true;
    loop_defer_cancel(s->loop, &c->read_defer);
    loop_defer_cancel(s->loop, &c->input_defer);
    loop_io_close(&c->io);
    loop_timer_stop(&c->timer);
    bool is_orphan = false;
    if (c->state == CS_HANDLING && c->x) {
        if (c->x->on_abort)
            c->x->on_abort(c->x); /* the owner stops its work: the exchange can go */
        else
            is_orphan = true;     /* the handler will still answer: keep its request alive */
    }
    finish_exchange(c, 0);
    sock_close(&c->sock);
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    s->stats.active--;
    if (s->cfg.conn_closed)
        s->cfg.conn_closed(&c->peer, s->cfg.conn_arg);
    if (is_orphan) {
        c->is_orphan = true;
        c->prev = NULL;
        c->next = s->orphans;
        if (s->orphans)
            s->orphans->prev = c;
        s->orphans = c;
    } else {
        conn_release_memory(c);
        /* Freed after this batch of events: never inside its own callback. */
        loop_defer(s->loop, &c->defer, conn_free_cb, c);
    }
    if (s->is_accept_paused && !s->is_draining && !loop_timer_is_active(&s->accept_timer) &&
        s->stats.active < s->cfg.max_connections) {
        s->is_accept_paused = false;
        set_accepting(s, true);
    }
    if (s->is_draining && s->stats.active == 0)
        loop_defer(s->loop, &s->drained_defer, drained_cb, s);
}

static void conn_start_linger(struct http1_conn *c)
{
    /* TLS: close_notify first; then FIN so the client sees the end. */
    if (c->sock.ops->shutdown)
        c->sock.ops->shutdown(&c->sock);
    shutdown(c->sock.fd, SHUT_WR);
    c->state = CS_LINGER;
    c->linger_bytes = 0;
    loop_io_set(&c->io, LOOP_READ);
    conn_arm(c, LINGER_MS);
}

/* ---- responses ----------------------------------------------------------- */

static int build_head(struct http1_conn *c, int status, const struct http1_header *headers, size_t nheaders,
                      size_t body_len)
{
    struct buf *w = &c->wbuf;
    char date[30];
    int rc = buf_take(w, &c->srv->wpool);

    http1_format_date(date);
    rc |= buf_append(w, "HTTP/1.1 ", 9);
    rc |= buf_append_u64(w, (unsigned)status);
    rc |= buf_append(w, " ", 1);
    rc |= buf_append_cstr(w, http1_reason_phrase(status));
    rc |= buf_append(w, "\r\nDate: ", 8);
    rc |= buf_append(w, date, 29);
    rc |= buf_append(w, "\r\n", 2);
    for (size_t i = 0; i < nheaders; i++) {
        rc |= buf_append_str(w, headers[i].name);
        rc |= buf_append(w, ": ", 2);
        rc |= buf_append_str(w, headers[i].value);
        rc |= buf_append(w, "\r\n", 2);
    }
    if (status != 204 && status >= 200) {
        rc |= buf_append(w, "Content-Length: ", 16);
        rc |= buf_append_u64(w, body_len);
        rc |= buf_append(w, "\r\n", 2);
    }
    if (c->close_after)
        rc |= buf_append(w, "Connection: close\r\n\r\n", 21);
    else if (c->x->req.minor_version == 0)
        rc |= buf_append(w, "Connection: keep-alive\r\n\r\n", 26);
    else
        rc |= buf_append(w, "\r\n", 2);
    return rc ? -ENOMEM : 0;
}

static bool has_body(const struct http1_conn *c, int status)
{
    return status >= 200 && status != 204 && status != 304 &&
           !str_eq(c->x->req.method, STR_LIT("HEAD"));
}

static int respond_common(struct http1_exchange *x, int status, const struct http1_header *headers,
                          size_t nheaders, struct str body, struct buf *steal)
{
    struct http1_conn *c = x->conn;
    if (c->is_orphan) {
        /* The client left: the answer goes nowhere; now the memory can go. */
        struct http1_server *s = c->srv;
        c->is_orphan = false;
        if (c->prev)
            c->prev->next = c->next;
        else
            s->orphans = c->next;
        if (c->next)
            c->next->prev = c->prev;
        conn_release_memory(c);
        loop_defer(s->loop, &c->defer, conn_free_cb, c);
        return -ECONNRESET;
    }
    if (c->state != CS_HANDLING || c->is_closed)
        return -EALREADY;
    if (c->srv->is_draining)
        c->close_after = true;
    size_t blen = steal ? buf_len(steal) : body.n;
    if (build_head(c, status, headers, nheaders, blen) < 0)
        goto nomem;
    if (has_body(c, status) && blen) {
        if (steal) {
            struct buf tmp = c->wbody;
            c->wbody = *steal;
            *steal = tmp;
            buf_reset(steal);
        } else if (buf_append_str(&c->wbuf, body) < 0) {
            goto nomem;
        }
    }
    c->status = status;
    c->state = CS_WRITING;
    c->srv->stats.responses++;
    conn_arm(c, c->srv->cfg.write_timeout_ms);
    conn_flush(c);
    return 0;
nomem:
    conn_close(c);
    return -ENOMEM;
}

int http1_respond(struct http1_exchange *x, int status, const struct http1_header *headers, size_t nheaders,
                  struct str body)
{
    return respond_common(x, status, headers, nheaders, body, NULL);
}

int http1_respond_buf(struct http1_exchange *x, int status, const struct http1_header *headers,
                      size_t nheaders, struct buf *body)
{
    return respond_common(x, status, headers, nheaders, STR_NULL, body);
}

int http1_respond_error(struct http1_exchange *x, int status, const char *code, const char *message,
                        const char *request_id)
{
    struct buf body;
    char rid[33];
    static const struct http1_header ct = { STR_LIT("Content-Type"), STR_LIT("application/json") };

    if (!request_id) {
        rand_hex(rid, 16);
        request_id = rid;
    }
    buf_init(&body, 64 * 1024);
    if (json_error_body(&body, code, message, request_id) < 0) {
        buf_free(&body);
        conn_close(x->conn);
        return -ENOMEM;
    }
    int rc = http1_respond_buf(x, status, &ct, 1, &body);
    buf_free(&body);
    return rc;
}

/* A protocol-level error before or instead of the handler: reply and close. */
static void conn_fail(struct http1_conn *c, int status, const char *code, const char *message)
{
    c->srv->stats.parse_errors++;
    c->close_after = true;
    if (!conn_exchange(c)) {
        conn_close(c);
        return;
    }
    if (c->state == CS_HEAD || c->state == CS_IDLE)
        memset(&c->x->req, 0, sizeof c->x->req);
    c->x->req.minor_version = 1;
    c->state = CS_HANDLING;
    loop_io_set(&c->io, 0);
    http1_respond_error(c->x, status, code, message, NULL);
}

static void conn_after_response(struct http1_conn *c)
{
    struct http1_server *s = c->srv;

    finish_exchange(c, c->status);
    conn_drop_exchange(c);
    if (c->close_after) {
        conn_start_linger(c);
        return;
    }
    buf_consume(&c->rbuf, c->in_pos);
    c->head_len = c->in_pos = c->body_len = 0;
    if (buf_len(&c->rbuf)) {
        /* A pipelined request is waiting: parse it on the next round so
         * that a long pipeline cannot recurse. */
        c->state = CS_HEAD;
        conn_arm(c, s->cfg.header_timeout_ms);
        loop_io_set(&c->io, LOOP_READ);
        loop_defer(s->loop, &c->input_defer, (loop_defer_cb)conn_process_input, c);
        return;
    }
    /* Idle keep-alive connections hold no buffers: memory per idle
     * connection is the conn struct alone. */
    conn_release_memory(c);
    c->state = CS_IDLE;
    conn_arm(c, s->cfg.idle_timeout_ms);
    loop_io_set(&c->io, LOOP_READ);
}

static void conn_flush(struct http1_conn *c)
{
    while (buf_len(&c->wbuf) || buf_len(&c->wbody)) {
        struct iovec iov[2];
        int n = 0;
        if (buf_len(&c->wbuf))
            iov[n++] = (struct iovec){ (void *)buf_rptr(&c->wbuf), buf_len(&c->wbuf) };
        if (buf_len(&c->wbody))
            iov[n++] = (struct iovec){ (void *)buf_rptr(&c->wbody), buf_len(&c->wbody) };
        ssize_t w = sock_writev(&c->sock, iov, n);
        if (w == -EAGAIN) {
            loop_io_set(&c->io, c->sock.want | (c->state == CS_BODY ? LOOP_READ : 0));
            return;
        }
        if (w < 0) {
            conn_close(c);
            return;
        }
        if (c->x)
            c->x->bytes_out += (uint64_t)w;
        size_t head = buf_len(&c->wbuf) < (size_t)w ? buf_len(&c->wbuf) : (size_t)w;
        buf_consume(&c->wbuf, head);
        buf_consume(&c->wbody, (size_t)w - head);
    }
    if (c->state == CS_WRITING)
        conn_after_response(c);
    else if (c->state == CS_BODY)
        loop_io_set(&c->io, LOOP_READ); /* a 100 Continue went out */
}

/* ---- requests ------------------------------------------------------------ */

static void dispatch(struct http1_conn *c)
{
    struct http1_server *s = c->srv;
    c->state = CS_HANDLING;
    /* Keep watching a plain socket while the handler works, to notice a
     * client that goes away (its work is then aborted, as NGINX does). */
    loop_io_set(&c->io, c->sock.ops == &sock_plain_ops ? LOOP_READ : 0);
    loop_timer_stop(&c->timer);
    c->x->body = str_make(c->rbuf.data + c->rbuf.rpos + c->head_len, c->body_len);
    c->x->start_ms = loop_now_ms(s->loop);
    c->x->bytes_in = c->in_pos;
    c->x->bytes_out = 0;
    c->nrequests++;
    s->stats.requests++;
    if (!c->x->req.keep_alive || s->is_draining ||
        (s->cfg.max_requests_per_connection && c->nrequests >= s->cfg.max_requests_per_connection))
        c->close_after = true;
    c->is_dispatched = true;
    s->cfg.handler(c->x, s->cfg.handler_arg);
}

/* The parser's result (its error codes are small negatives that overlap
 * errno values, so allocation failure is reported through *is_oom). */
static int parse_head(struct http1_conn *c, bool *is_oom)
{
    struct http1_server *s = c->srv;
    size_t cap = s->cfg.limits.max_headers;
    struct http1_header stack_headers[128];
    struct http1_header *hdrs = stack_headers;
    if (!conn_exchange(c)) {
        *is_oom = true;
        return 0;
    }
    if (cap > 128) {
        hdrs = arena_alloc(&c->x->arena, cap * sizeof *hdrs);
        if (!hdrs) {
            *is_oom = true;
            return 0;
        }
    }
    int rc = http1_parse_request(buf_rptr(&c->rbuf), buf_len(&c->rbuf), &s->cfg.limits, &c->x->req, hdrs, cap);
    if (rc <= 0)
        return rc;
    if (hdrs == stack_headers && c->x->req.nheaders) {
        struct http1_header *copy = arena_alloc(&c->x->arena, c->x->req.nheaders * sizeof *copy);
        if (!copy) {
            *is_oom = true;
            return 0;
        }
        memcpy(copy, hdrs, c->x->req.nheaders * sizeof *copy);
        c->x->req.headers = copy;
    }
    return rc;
}

static void send_continue(struct http1_conn *c)
{
    if (buf_append(&c->wbuf, "HTTP/1.1 100 Continue\r\n\r\n", 25) < 0) {
        conn_close(c);
        return;
    }
    conn_flush(c);
}

/* Decodes as much chunked input as is buffered. 1: body complete, 0: need
 * more, <0: error already answered. */
static int decode_chunked(struct http1_conn *c)
{
    struct http1_server *s = c->srv;
    char *base = c->rbuf.data + c->rbuf.rpos;
    size_t len = buf_len(&c->rbuf);
    int result = 0;

    while (c->in_pos < len) {
        struct str data;
        size_t used = 0;
        int rc = http1_chunked_feed(&c->chunked, base + c->in_pos, len - c->in_pos, &data, &used);
        c->in_pos += used;
        if (rc == HTTP1_CHUNK_DATA) {
            if (c->body_len + data.n > s->cfg.max_body) {
                conn_fail(c, 413, "payload_too_large", "request body exceeds the limit");
                return -1;
            }
            /* Decoded bytes never outrun encoded ones: move left in place. */
            memmove(base + c->head_len + c->body_len, data.p, data.n);
            c->body_len += data.n;
            continue;
        }
        if (rc == HTTP1_CHUNK_DONE) {
            result = 1;
            break;
        }
        if (rc == HTTP1_CHUNK_NEED_MORE)
            break;
        conn_fail(c, http1_error_status(rc), http1_error_code(rc), "invalid chunked body");
        return -1;
    }
    /* Drop the encoding overhead between the decoded body and the undecoded
     * rest, so the buffer holds head + body + at most one read. */
    size_t body_end = c->head_len + c->body_len;
    if (c->in_pos > body_end) {
        size_t rest = len - c->in_pos;
        memmove(base + body_end, base + c->in_pos, rest);
        c->rbuf.wpos -= c->in_pos - body_end;
        c->in_pos = body_end;
    }
    return result;
}

static void conn_process_input(struct http1_conn *c)
{
    struct http1_server *s = c->srv;

    if (c->is_closed)
        return;
    if (c->state == CS_HEAD || c->state == CS_IDLE) {
        if (!buf_len(&c->rbuf))
            return;
        c->state = CS_HEAD;
        bool is_oom = false;
        int rc = parse_head(c, &is_oom);
        if (is_oom) {
            conn_close(c);
            return;
        }
        if (rc == HTTP1_INCOMPLETE)
            return;
        if (rc < 0) {
            conn_fail(c, http1_error_status(rc), http1_error_code(rc), "malformed request");
            return;
        }
        c->head_len = c->in_pos = (size_t)rc;
        c->body_len = 0;
        const struct http1_request *r = &c->x->req;
        if (r->body_kind == HTTP1_BODY_NONE || (r->body_kind == HTTP1_BODY_LENGTH && r->content_length == 0)) {
            dispatch(c);
            return;
        }
        if (r->body_kind == HTTP1_BODY_LENGTH && r->content_length > s->cfg.max_body) {
            conn_fail(c, 413, "payload_too_large", "request body exceeds the limit");
            return;
        }
        if (r->body_kind == HTTP1_BODY_CHUNKED)
            http1_chunked_init(&c->chunked);
        c->state = CS_BODY;
        conn_arm(c, s->cfg.body_timeout_ms);
        size_t have = buf_len(&c->rbuf) - c->head_len;
        if (r->expect_continue && (r->body_kind == HTTP1_BODY_CHUNKED || have < r->content_length) && have == 0)
            send_continue(c);
        if (c->is_closed)
            return;
    }
    if (c->state == CS_BODY) {
        const struct http1_request *r = &c->x->req;
        if (r->body_kind == HTTP1_BODY_LENGTH) {
            if (buf_len(&c->rbuf) - c->head_len < r->content_length)
                return;
            c->body_len = (size_t)r->content_length;
            c->in_pos = c->head_len + c->body_len;
            dispatch(c);
            return;
        }
        int rc = decode_chunked(c);
        if (rc == 1)
            dispatch(c);
    }
}

/* Moves a view that points into the old head; static strings stay put. */
static void rebase(struct str *v, const char *old, size_t head_len, const char *now)
{
    if (v->p && v->p >= old && v->p <= old + head_len)
        v->p = now + (v->p - old);
}

/* The buffer moved (grew or compacted) while a parsed head points into it:
 * move every view by the same distance, the bytes kept their order. */
static void rebase_request(struct http1_conn *c, const char *old)
{
    const char *now = buf_rptr(&c->rbuf);
    struct http1_request *r = &c->x->req;
    if (old == now)
        return;
    size_t n = c->head_len;
    rebase(&r->method, old, n, now);
    rebase(&r->target, old, n, now);
    rebase(&r->path, old, n, now);
    rebase(&r->query, old, n, now);
    rebase(&r->scheme, old, n, now);
    rebase(&r->authority, old, n, now);
    rebase(&r->host, old, n, now);
    for (size_t i = 0; i < r->nheaders; i++) {
        rebase(&r->headers[i].name, old, n, now);
        rebase(&r->headers[i].value, old, n, now);
    }
}

static void conn_read(struct http1_conn *c);
static void conn_read_again(void *arg)
{
    struct http1_conn *c = arg;
    if (!c->is_closed)
        conn_read(c);
}

static void conn_read(struct http1_conn *c)
{
    struct http1_server *s = c->srv;

    for (int i = 0; i < READS_PER_WAKEUP && !c->is_closed; i++) {
        if (c->state != CS_IDLE && c->state != CS_HEAD && c->state != CS_BODY)
            return;
        int rc = buf_take(&c->rbuf, &s->rpool);
        const char *old = buf_rptr(&c->rbuf);
        /* Read into what is free; grow only when less than 1 KiB is left. */
        if (rc == 0 && buf_writable(&c->rbuf) < 1024)
            rc = buf_reserve(&c->rbuf, READ_CHUNK);
        if (rc == 0 && c->state == CS_BODY)
            rebase_request(c, old);
        if (rc == -ENOBUFS) {
            /* The parser's limits fire before this; a client pushing past
             * them without waiting gets the matching error. */
            if (c->state == CS_BODY)
                conn_fail(c, 413, "payload_too_large", "request body exceeds the limit");
            else
                conn_fail(c, 431, "header_too_large", "request header fields too large");
            return;
        }
        if (rc < 0) {
            conn_close(c);
            return;
        }
        size_t room = buf_writable(&c->rbuf);
        ssize_t n = sock_read(&c->sock, buf_wptr(&c->rbuf), room);
        if (n == -EAGAIN) {
            loop_io_set(&c->io, c->sock.want);
            return;
        }
        if (n <= 0) {
            /* EOF or error: a half-sent request is abandoned (nothing to answer). */
            conn_close(c);
            return;
        }
        buf_commit(&c->rbuf, (size_t)n);
        if (c->state == CS_IDLE) {
            c->state = CS_HEAD;
            conn_arm(c, s->cfg.header_timeout_ms);
        } else if (c->state == CS_BODY) {
            conn_arm(c, s->cfg.body_timeout_ms);
        }
        conn_process_input(c);
        /* A short read drained a TCP socket: skip the read that would say
         * EAGAIN. Not for TLS, which may hold decrypted records. A
         * connection accepted just now is not watched yet: the rest of a
         * request split across segments must wake us. */
        if ((size_t)n < room && c->sock.ops == &sock_plain_ops) {
            if ((c->state == CS_IDLE || c->state == CS_HEAD || c->state == CS_BODY) && !(c->io.want & LOOP_READ))
                loop_io_set(&c->io, LOOP_READ);
            return;
        }
    }
    /* The cap was hit: TLS may hold decrypted bytes that epoll cannot see,
     * so come back after the other connections had their turn. */
    if (!c->is_closed && c->sock.ops != &sock_plain_ops)
        loop_defer(s->loop, &c->read_defer, conn_read_again, c);
}

static void conn_linger_read(struct http1_conn *c)
{
    char scratch[4096];
    for (int i = 0; i < READS_PER_WAKEUP; i++) {
        ssize_t n = sock_read(&c->sock, scratch, sizeof scratch);
        if (n == -EAGAIN) {
            loop_io_set(&c->io, c->sock.want);
            return;
        }
        if (n <= 0 || (c->linger_bytes += (size_t)n) > LINGER_MAX_BYTES) {
            conn_close(c);
            return;
        }
    }
}

static void conn_io_cb(struct loop_io *io, unsigned events)
{
    struct http1_conn *c = io->data;

    if (c->is_closed)
        return;
    switch (c->state) {
    case CS_HANDSHAKE: {
        int rc = sock_handshake(&c->sock);
        if (rc == -EAGAIN) {
            loop_io_set(&c->io, c->sock.want);
            return;
        }
        if (rc < 0) {
            c->srv->stats.refused_transport++;
            conn_close(c);
            return;
        }
        c->state = CS_IDLE;
        conn_arm(c, c->srv->cfg.idle_timeout_ms);
        loop_io_set(&c->io, LOOP_READ);
        conn_read(c);
        return;
    }
    case CS_IDLE:
    case CS_HEAD:
    case CS_BODY:
        if ((events & LOOP_WRITE) && (buf_len(&c->wbuf) || buf_len(&c->wbody)))
            conn_flush(c);
        if (!c->is_closed && (events & LOOP_READ))
            conn_read(c);
        return;
    case CS_WRITING:
        conn_flush(c);
        return;
    case CS_LINGER:
        conn_linger_read(c);
        return;
    case CS_HANDLING:
        if (events & (LOOP_READ | LOOP_ERROR)) {
            char b;
            ssize_t n = recv(c->sock.fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
            if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
                /* The client closed (or reset) while its request was being
                 * handled: abort the work; nobody is left to answer. */
                c->srv->stats.client_aborts++;
                conn_close(c);
                return;
            }
            if (n > 0)
                loop_io_set(&c->io, 0); /* a pipelined request: read it after this response */
        }
        return;
    }
}

static void conn_timer_cb(struct loop_timer *t)
{
    struct http1_conn *c = t->data;
    c->srv->stats.timeouts++;
    if (c->state == CS_HEAD || c->state == CS_BODY) {
        /* Slowloris or a stalled upload: 408, then close. */
        conn_fail(c, 408, "request_timeout", "the request was not received in time");
        return;
    }
    conn_close(c);
}

/* ---- drain and teardown ------------------------------------------------ */

void http1_server_drain(struct http1_server *s, void (*on_drained)(void *arg), void *arg)
{
    s->is_draining = true;
    s->on_drained = on_drained;
    s->drained_arg = arg;
    close_listeners_how(s, true);
    struct http1_conn *c = s->conns;
    while (c) {
        struct http1_conn *next = c->next;
        if (c->state == CS_HANDSHAKE) {
            conn_close(c);
        } else if (c->state == CS_IDLE) {
            /* An idle keep-alive connection may have a request on its way:
             * closing it now would reset that request. It gets a short
             * grace instead, and a request arriving meanwhile is answered
             * with Connection: close (HAProxy's and Envoy's drain). */
            c->close_after = true;
            conn_arm(c, s->cfg.drain_idle_ms);
        } else {
            c->close_after = true;
        }
        c = next;
    }
    if (s->stats.active == 0)
        loop_defer(s->loop, &s->drained_defer, drained_cb, s);
}

void http1_server_close_all(struct http1_server *s)
{
    close_listeners(s);
    while (s->conns)
        conn_close(s->conns);
}

void http1_server_free(struct http1_server *s)
{
    if (!s)
        return;
    close_listeners(s);
    while (s->conns)
        conn_close(s->conns);
    while (s->orphans) {
        struct http1_conn *c = s->orphans;
        s->orphans = c->next;
        conn_release_memory(c);
        loop_defer_cancel(s->loop, &c->defer);
        free(c);
    }
    loop_defer_cancel(s->loop, &s->drained_defer);
    while (s->free_exchanges) {
        struct http1_exchange *x = s->free_exchanges;
        s->free_exchanges = x->user;
        free(x);
    }
    buf_pool_free(&s->rpool);
    buf_pool_free(&s->wpool);
    arena_pool_free(&s->apool);
    free(s);
}
