/* bus.c — NATS JetStream through cnats, results delivered on the loop (see bus.h).
 *
 * Threads meet in one place: `struct bus`'s lock guards the publish queue
 * (loop → publisher thread), the done queues (publisher and fetcher threads
 * → loop) and the per-subscription in-flight counts. A thread that adds to
 * an empty done queue posts one "kick" to the loop (loop_post), which drains
 * both queues: one post per batch, not per message.
 *
 * Lifetime: the bus is reference-counted. The owner holds one reference
 * until bus_free(); every pending kick and every bus_msg in the caller's
 * hands holds one, so a kick that runs after bus_free(), or an ack of a
 * message held across it, finds the memory still there (and does nothing). */
#include "core/bus.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <nats/nats.h>

#include "core/log.h"
#include "core/loop.h"
#include "core/metrics.h"

/* 2 min: the duplicate window asked of every stream (JetStream's default
 * too); an outbox relay retries well within it. In nanoseconds. */
#define BUS_DUPLICATE_WINDOW_NS (120LL * 1000 * 1000 * 1000)
/* Fetch waits at most this long, so bus_free() never waits longer. */
#define BUS_FETCH_WAIT_MS 500
/* Messages asked for per pull request. */
#define BUS_FETCH_BATCH 64
/* Reconnect attempts after a loss: every 250 ms, forever. */
#define BUS_RECONNECT_WAIT_MS 250
/* First connect attempt, the only wait bus_new() does. */
#define BUS_CONNECT_TIMEOUT_MS 2000
/* Pause of the fetcher after an error other than a timeout (connection
 * down): don't spin. */
#define BUS_FETCH_RETRY_MS 250

enum pub_result { PUB_OK, PUB_DUPLICATE, PUB_TIMEOUT, PUB_UNAVAILABLE, PUB_ERROR };

struct bus_pub {
    struct bus_pub *next;
    void (*cb)(int err, void *arg);
    void *arg;
    uint64_t deadline_ms; /* CLOCK_MONOTONIC */
    int err;
    enum pub_result result;
    char *subject;
    char *msg_id; /* NULL: none */
    size_t len;
    char data[]; /* then subject, then msg_id */
};

struct bus_sub {
    struct bus_sub *next;
    struct bus *b;
    natsSubscription *sub;
    pthread_t thread;
    bool has_thread;
    void (*on_msg)(struct bus_msg *m, void *arg);
    void *arg;
    uint32_t inflight; /* under b->lock */
    char stream[128];
    char durable[128];
};

struct bus_msg {
    struct bus_msg *next;
    struct bus *b;
    struct bus_sub *sub;
    natsMsg *msg;
    const char *id;
    uint64_t delivered;
};

struct bus {
    struct loop *loop;
    atomic_int refs;
    atomic_bool is_connected;
    atomic_bool is_closing; /* bus_free() under way: the close is no "loss" */
    bool is_closed; /* bus_free() ran (loop thread only) */

    natsOptions *opts;
    natsConnection *nc;
    jsCtx *js;
    uint32_t publish_timeout_ms;
    uint32_t ack_wait_ms;
    uint32_t max_inflight;
    uint32_t max_queued;
    char url_for_log[256];

    pthread_mutex_t lock;
    pthread_cond_t cond; /* publisher: work or stop; fetchers: room or stop */
    bool is_stopping;
    struct bus_pub *pub_head, *pub_tail;
    uint32_t npub;
    struct bus_pub *done_head, *done_tail;
    struct bus_msg *msg_head, *msg_tail;
    bool is_kick_pending;

    pthread_t publisher;
    bool has_publisher;
    struct bus_sub *subs;
};

/* ---- metrics ------------------------------------------------------------- */

static struct metrics_counter *m_pub[5];
static struct metrics_counter *m_received;
static pthread_once_t metrics_once = PTHREAD_ONCE_INIT;

static void metrics_init(void)
{
    struct metrics_registry *r = metrics_default();
    struct metrics_family *f = NULL, *g = NULL;
    if (!r)
        return;
    if (metrics_register_counter(r, "strata_bus_published_total",
                                 "JetStream publishes by outcome.", METRICS_LABELS("result"),
                                 &f) == 0) {
        m_pub[PUB_OK] = metrics_counter_with(f, "ok");
        m_pub[PUB_DUPLICATE] = metrics_counter_with(f, "duplicate");
        m_pub[PUB_TIMEOUT] = metrics_counter_with(f, "timeout");
        m_pub[PUB_UNAVAILABLE] = metrics_counter_with(f, "unavailable");
        m_pub[PUB_ERROR] = metrics_counter_with(f, "error");
    }
    if (metrics_register_counter(r, "strata_bus_received_total",
                                 "JetStream messages delivered to consumers (redeliveries included).",
                                 NULL, &g) == 0)
        m_received = metrics_counter_with(g);
}

/* ---- helpers --------------------------------------------------------------- */

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void set_err(char *err, size_t errsz, const char *what, natsStatus s, jsErrCode jerr)
{
    if (!err || !errsz)
        return;
    const char *last = nats_GetLastError(NULL);
    if (jerr)
        snprintf(err, errsz, "%s: %s (JetStream error %d)", what,
                 last && *last ? last : natsStatus_GetText(s), (int)jerr);
    else
        snprintf(err, errsz, "%s: %s", what, last && *last ? last : natsStatus_GetText(s));
}

static int status_errno(natsStatus s, jsErrCode jerr)
{
    switch (s) {
    case NATS_OK:
        return 0;
    case NATS_TIMEOUT:
        return -ETIMEDOUT;
    case NATS_NO_RESPONDERS:
        return -ENOENT;
    case NATS_MAX_PAYLOAD:
        return -EMSGSIZE;
    case NATS_NO_MEMORY:
        return -ENOMEM;
    case NATS_INVALID_ARG:
        return -EINVAL;
    case NATS_CONNECTION_CLOSED:
    case NATS_CONNECTION_DISCONNECTED:
    case NATS_NOT_YET_CONNECTED:
    case NATS_STALE_CONNECTION:
        return -ENOTCONN;
    default:
        return jerr || s == NATS_ERR ? -EPROTO : -EIO;
    }
}

static void bus_release(struct bus *b)
{
    if (atomic_fetch_sub(&b->refs, 1) != 1)
        return;
    for (struct bus_sub *s = b->subs, *next; s; s = next) {
        next = s->next;
        free(s);
    }
    pthread_mutex_destroy(&b->lock);
    pthread_cond_destroy(&b->cond);
    free(b);
}

/* ---- hand-off to the loop -------------------------------------------------- */

static void kick_cb(void *data);

/* With b->lock held: makes sure a kick is on its way. Returns true when the
 * caller must post it (after unlocking). */
static bool need_kick_locked(struct bus *b)
{
    if (b->is_kick_pending)
        return false;
    b->is_kick_pending = true;
    atomic_fetch_add(&b->refs, 1);
    return true;
}

static void post_kick(struct bus *b)
{
    if (loop_post(b->loop, kick_cb, b) == 0)
        return;
    /* Out of memory: the items stay queued; the next hand-off retries. */
    pthread_mutex_lock(&b->lock);
    b->is_kick_pending = false;
    pthread_mutex_unlock(&b->lock);
    bus_release(b);
}

static void msg_destroy(struct bus_msg *m)
{
    natsMsg_Destroy(m->msg);
    free(m);
}

static void kick_cb(void *data)
{
    struct bus *b = data;
    pthread_mutex_lock(&b->lock);
    struct bus_pub *p = b->done_head;
    struct bus_msg *m = b->msg_head;
    b->done_head = b->done_tail = NULL;
    b->msg_head = b->msg_tail = NULL;
    b->is_kick_pending = false;
    pthread_mutex_unlock(&b->lock);

    while (p) {
        struct bus_pub *next = p->next;
        if (!b->is_closed) {
            metrics_counter_add(m_pub[p->result], 1);
            p->cb(p->err, p->arg);
        }
        free(p);
        p = next;
    }
    while (m) {
        struct bus_msg *next = m->next;
        m->next = NULL;
        if (!b->is_closed) {
            metrics_counter_add(m_received, 1);
            m->sub->on_msg(m, m->sub->arg); /* the callee acks or naks it */
        } else {
            msg_destroy(m);
            bus_release(b);
        }
        m = next;
    }
    bus_release(b);
}

/* ---- connection callbacks (cnats threads) ----------------------------------- */

static void on_connected(natsConnection *nc, void *closure)
{
    struct bus *b = closure;
    atomic_store(&b->is_connected, true);
    log_info("nats connected", LOG_STR("url", b->url_for_log));
}

static void on_disconnected(natsConnection *nc, void *closure)
{
    struct bus *b = closure;
    if (atomic_exchange(&b->is_connected, false) && !atomic_load(&b->is_closing))
        log_warn("nats connection lost", LOG_STR("url", b->url_for_log));
}

/* cnats delivers connection events on its own thread, possibly after
 * bus_free() returned: the connection holds a reference, dropped by this,
 * its last event. */
static void on_closed(natsConnection *nc, void *closure)
{
    bus_release(closure);
}

static void on_reconnected(natsConnection *nc, void *closure)
{
    struct bus *b = closure;
    if (!atomic_exchange(&b->is_connected, true))
        log_info("nats connection restored", LOG_STR("url", b->url_for_log));
}

/* ---- publisher thread -------------------------------------------------------- */

static void publish_one(struct bus *b, struct bus_pub *p)
{
    uint64_t now = mono_ms();
    if (now >= p->deadline_ms) {
        p->err = -ETIMEDOUT;
        p->result = PUB_TIMEOUT;
        return;
    }
    if (natsConnection_Status(b->nc) != NATS_CONN_STATUS_CONNECTED) {
        p->err = -ENOTCONN;
        p->result = PUB_UNAVAILABLE;
        return;
    }
    natsMsg *msg = NULL;
    jsPubAck *pa = NULL;
    jsErrCode jerr = 0;
    natsStatus s = natsMsg_Create(&msg, p->subject, NULL, p->data, (int)p->len);
    if (s == NATS_OK) {
        jsPubOptions po;
        jsPubOptions_Init(&po);
        po.MsgId = p->msg_id;
        po.MaxWait = (int64_t)(p->deadline_ms - now);
        s = js_PublishMsg(&pa, b->js, msg, &po, &jerr);
    }
    p->err = status_errno(s, jerr);
    if (s == NATS_OK)
        p->result = pa && pa->Duplicate ? PUB_DUPLICATE : PUB_OK;
    else if (p->err == -ETIMEDOUT)
        p->result = PUB_TIMEOUT;
    else if (p->err == -ENOTCONN)
        p->result = PUB_UNAVAILABLE;
    else
        p->result = PUB_ERROR;
    if (s != NATS_OK && p->err != -ETIMEDOUT && p->err != -ENOTCONN) {
        const char *last = nats_GetLastError(NULL);
        log_warn("nats publish failed", LOG_STR("subject", p->subject),
                 LOG_STR("error", last && *last ? last : natsStatus_GetText(s)),
                 LOG_INT("jetstream_error", (int64_t)jerr));
    }
    jsPubAck_Destroy(pa);
    natsMsg_Destroy(msg);
}

static void *publisher_main(void *arg)
{
    struct bus *b = arg;
    pthread_mutex_lock(&b->lock);
    for (;;) {
        while (!b->is_stopping && !b->pub_head)
            pthread_cond_wait(&b->cond, &b->lock);
        if (b->is_stopping)
            break;
        struct bus_pub *p = b->pub_head;
        b->pub_head = p->next;
        if (!b->pub_head)
            b->pub_tail = NULL;
        b->npub--;
        pthread_mutex_unlock(&b->lock);

        p->next = NULL;
        publish_one(b, p);

        pthread_mutex_lock(&b->lock);
        if (b->done_tail)
            b->done_tail->next = p;
        else
            b->done_head = p;
        b->done_tail = p;
        if (need_kick_locked(b)) {
            pthread_mutex_unlock(&b->lock);
            post_kick(b);
            pthread_mutex_lock(&b->lock);
        }
    }
    pthread_mutex_unlock(&b->lock);
    return NULL;
}

/* ---- fetcher threads ----------------------------------------------------------- */

static struct bus_msg *wrap_msg(struct bus_sub *s, natsMsg *msg)
{
    struct bus_msg *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->b = s->b;
    m->sub = s;
    m->msg = msg;
    m->id = "";
    const char *id = NULL;
    if (natsMsgHeader_Get(msg, "Nats-Msg-Id", &id) == NATS_OK && id)
        m->id = id;
    jsMsgMetaData *meta = NULL;
    if (natsMsg_GetMetaData(&meta, msg) == NATS_OK && meta) {
        m->delivered = meta->NumDelivered;
        jsMsgMetaData_Destroy(meta);
    }
    return m;
}

/* Sleeps up to ms unless the bus is stopping. With b->lock held. */
static void pause_locked(struct bus *b, uint32_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    if (!b->is_stopping)
        pthread_cond_timedwait(&b->cond, &b->lock, &ts);
}

static void *fetcher_main(void *arg)
{
    struct bus_sub *s = arg;
    struct bus *b = s->b;
    pthread_mutex_lock(&b->lock);
    while (!b->is_stopping) {
        if (s->inflight >= b->max_inflight) {
            pthread_cond_wait(&b->cond, &b->lock);
            continue;
        }
        uint32_t room = b->max_inflight - s->inflight;
        pthread_mutex_unlock(&b->lock);

        natsMsgList list = { 0 };
        jsErrCode jerr = 0;
        natsStatus st = natsSubscription_Fetch(&list, s->sub,
                                               (int)(room < BUS_FETCH_BATCH ? room : BUS_FETCH_BATCH),
                                               BUS_FETCH_WAIT_MS, &jerr);
        struct bus_msg *head = NULL, *tail = NULL;
        uint32_t n = 0;
        for (int i = 0; st == NATS_OK && i < list.Count; i++) {
            struct bus_msg *m = wrap_msg(s, list.Msgs[i]);
            if (!m)
                continue; /* destroyed with the list: unacked, so redelivered */
            list.Msgs[i] = NULL;
            if (tail)
                tail->next = m;
            else
                head = m;
            tail = m;
            n++;
        }
        natsMsgList_Destroy(&list);

        pthread_mutex_lock(&b->lock);
        if (head) {
            s->inflight += n;
            atomic_fetch_add(&b->refs, (int)n); /* one per message held */
            if (b->msg_tail)
                b->msg_tail->next = head;
            else
                b->msg_head = head;
            b->msg_tail = tail;
            if (need_kick_locked(b)) {
                pthread_mutex_unlock(&b->lock);
                post_kick(b);
                pthread_mutex_lock(&b->lock);
            }
        } else if (st != NATS_OK && st != NATS_TIMEOUT) {
            pause_locked(b, BUS_FETCH_RETRY_MS);
        }
    }
    pthread_mutex_unlock(&b->lock);
    return NULL;
}

/* ---- public API -------------------------------------------------------------- */

int bus_new(struct loop *l, const struct bus_config *cfg, struct bus **out, char *err,
            size_t errsz)
{
    pthread_once(&metrics_once, metrics_init);
    if (err && errsz)
        err[0] = '\0';
    if (!l || !cfg || !out || !cfg->url || !*cfg->url) {
        if (err && errsz)
            snprintf(err, errsz, "bus: loop, config and url are required");
        return -EINVAL;
    }
    struct bus *b = calloc(1, sizeof *b);
    if (!b)
        return -ENOMEM;
    b->loop = l;
    atomic_init(&b->refs, 1);
    atomic_init(&b->is_connected, false);
    atomic_init(&b->is_closing, false);
    b->publish_timeout_ms = cfg->publish_timeout_ms ? cfg->publish_timeout_ms : 5000;
    b->ack_wait_ms = cfg->ack_wait_ms ? cfg->ack_wait_ms : 30000;
    b->max_inflight = cfg->max_inflight ? cfg->max_inflight : 256;
    b->max_queued = cfg->max_queued ? cfg->max_queued : 10000;
    snprintf(b->url_for_log, sizeof b->url_for_log, "%s", cfg->url);
    pthread_mutex_init(&b->lock, NULL);
    pthread_cond_init(&b->cond, NULL);

    int rc = -EIO;
    natsStatus s = natsOptions_Create(&b->opts);
    if (s == NATS_OK)
        s = natsOptions_SetURL(b->opts, cfg->url);
    if (s == NATS_OK && cfg->name)
        s = natsOptions_SetName(b->opts, cfg->name);
    if (s == NATS_OK)
        s = natsOptions_SetTimeout(b->opts, BUS_CONNECT_TIMEOUT_MS);
    if (s == NATS_OK)
        s = natsOptions_SetMaxReconnect(b->opts, -1);
    if (s == NATS_OK)
        s = natsOptions_SetReconnectWait(b->opts, BUS_RECONNECT_WAIT_MS);
    if (s == NATS_OK)
        s = natsOptions_SetDisconnectedCB(b->opts, on_disconnected, b);
    if (s == NATS_OK)
        s = natsOptions_SetReconnectedCB(b->opts, on_reconnected, b);
    if (s == NATS_OK)
        s = natsOptions_SetClosedCB(b->opts, on_closed, b);
    if (s == NATS_OK)
        s = natsOptions_SetRetryOnFailedConnect(b->opts, true, on_connected, b);
    if (s != NATS_OK) {
        rc = s == NATS_INVALID_ARG ? -EINVAL : s == NATS_NO_MEMORY ? -ENOMEM : -EIO;
        set_err(err, errsz, "nats options", s, 0);
        goto fail;
    }
    s = natsConnection_Connect(&b->nc, b->opts);
    if (b->nc)
        atomic_fetch_add(&b->refs, 1); /* released by on_closed */
    if (s == NATS_OK) {
        atomic_store(&b->is_connected, true);
        log_info("nats connected", LOG_STR("url", b->url_for_log));
    } else if (s == NATS_NOT_YET_CONNECTED) {
        log_warn("nats unavailable; connecting in the background",
                 LOG_STR("url", b->url_for_log));
    } else {
        rc = s == NATS_NO_MEMORY ? -ENOMEM : s == NATS_INVALID_ARG ? -EINVAL : -EIO;
        set_err(err, errsz, "nats connect", s, 0);
        goto fail;
    }
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = b->publish_timeout_ms;
    s = natsConnection_JetStream(&b->js, b->nc, &jo);
    if (s != NATS_OK) {
        rc = -ENOMEM;
        set_err(err, errsz, "nats jetstream context", s, 0);
        goto fail;
    }
    if (pthread_create(&b->publisher, NULL, publisher_main, b) != 0) {
        rc = -EAGAIN;
        if (err && errsz)
            snprintf(err, errsz, "bus: cannot start the publisher thread");
        goto fail;
    }
    b->has_publisher = true;
    *out = b;
    return 0;
fail:
    jsCtx_Destroy(b->js);
    natsOptions_Destroy(b->opts);
    if (b->nc) {
        /* on_closed, on a cnats thread, drops the connection's reference. */
        natsConnection_Close(b->nc);
        natsConnection_Destroy(b->nc);
        bus_release(b);
        return rc;
    }
    pthread_mutex_destroy(&b->lock);
    pthread_cond_destroy(&b->cond);
    free(b);
    return rc;
}

void bus_free(struct bus *b)
{
    if (!b || b->is_closed)
        return;
    b->is_closed = true;
    atomic_store(&b->is_closing, true);
    pthread_mutex_lock(&b->lock);
    b->is_stopping = true;
    pthread_cond_broadcast(&b->cond);
    pthread_mutex_unlock(&b->lock);
    /* Fetchers finish their current pull (at most BUS_FETCH_WAIT_MS). */
    for (struct bus_sub *s = b->subs; s; s = s->next)
        if (s->has_thread)
            pthread_join(s->thread, NULL);

    pthread_mutex_lock(&b->lock);
    struct bus_pub *d = b->done_head;
    struct bus_msg *m = b->msg_head;
    b->done_head = b->done_tail = NULL;
    b->msg_head = b->msg_tail = NULL;
    pthread_mutex_unlock(&b->lock);
    for (struct bus_pub *next; d; d = next) {
        next = d->next;
        free(d);
    }
    /* Fetched but never handed out: give them back now rather than after
     * the ack wait, so another instance gets them at once. */
    for (struct bus_msg *next; m; m = next) {
        next = m->next;
        natsMsg_Nak(m->msg, NULL);
        msg_destroy(m);
        bus_release(b);
    }
    /* Acks and naks sent just before go out first (bounded). */
    if (atomic_load(&b->is_connected))
        natsConnection_FlushTimeout(b->nc, 500);
    /* Closing fails a publish in progress at once. */
    natsConnection_Close(b->nc);
    if (b->has_publisher)
        pthread_join(b->publisher, NULL);
    pthread_mutex_lock(&b->lock);
    struct bus_pub *p = b->pub_head;
    d = b->done_head;
    b->pub_head = b->pub_tail = b->done_head = b->done_tail = NULL;
    pthread_mutex_unlock(&b->lock);
    for (struct bus_pub *next; p; p = next) {
        next = p->next;
        free(p);
    }
    for (struct bus_pub *next; d; d = next) {
        next = d->next;
        free(d);
    }
    for (struct bus_sub *s = b->subs; s; s = s->next) {
        natsSubscription_Destroy(s->sub);
        s->sub = NULL;
    }
    jsCtx_Destroy(b->js);
    b->js = NULL;
    natsConnection_Destroy(b->nc);
    b->nc = NULL;
    natsOptions_Destroy(b->opts);
    b->opts = NULL;
    bus_release(b);
}

bool bus_is_connected(const struct bus *b)
{
    return b && atomic_load(&((struct bus *)b)->is_connected);
}

int bus_ensure_stream(struct bus *b, const char *stream, const char *const *subjects, char *err,
                      size_t errsz)
{
    if (err && errsz)
        err[0] = '\0';
    if (!b || !stream || !*stream || !subjects || !subjects[0]) {
        if (err && errsz)
            snprintf(err, errsz, "bus_ensure_stream: stream and subjects are required");
        return -EINVAL;
    }
    int n = 0;
    while (subjects[n])
        n++;
    jsStreamConfig sc;
    jsStreamConfig_Init(&sc);
    sc.Name = stream;
    sc.Subjects = (const char **)subjects;
    sc.SubjectsLen = n;
    sc.Storage = js_FileStorage;
    sc.Duplicates = BUS_DUPLICATE_WINDOW_NS;
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_AddStream(&si, b->js, &sc, NULL, &jerr);
    if (s != NATS_OK && jerr == JSStreamNameExistErr) {
        jerr = 0;
        s = js_UpdateStream(&si, b->js, &sc, NULL, &jerr);
    }
    jsStreamInfo_Destroy(si);
    if (s != NATS_OK) {
        char what[200];
        snprintf(what, sizeof what, "stream %s", stream);
        set_err(err, errsz, what, s, jerr);
        return status_errno(s, jerr);
    }
    return 0;
}

int bus_stream_msg_count(struct bus *b, const char *stream, uint64_t *out, char *err,
                         size_t errsz)
{
    if (err && errsz)
        err[0] = '\0';
    if (!b || !stream || !out)
        return -EINVAL;
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_GetStreamInfo(&si, b->js, stream, NULL, &jerr);
    if (s != NATS_OK) {
        set_err(err, errsz, "stream info", s, jerr);
        return status_errno(s, jerr);
    }
    *out = si->State.Msgs;
    jsStreamInfo_Destroy(si);
    return 0;
}

int bus_delete_stream(struct bus *b, const char *stream, char *err, size_t errsz)
{
    if (err && errsz)
        err[0] = '\0';
    if (!b || !stream)
        return -EINVAL;
    jsErrCode jerr = 0;
    natsStatus s = js_DeleteStream(b->js, stream, NULL, &jerr);
    if (s != NATS_OK) {
        set_err(err, errsz, "delete stream", s, jerr);
        return status_errno(s, jerr);
    }
    return 0;
}

int bus_publish(struct bus *b, const char *subject, const char *msg_id, const void *data,
                size_t len, void (*cb)(int err, void *arg), void *arg)
{
    if (!b || b->is_closed || !subject || !*subject || !cb || (!data && len) || len > INT32_MAX)
        return -EINVAL;
    size_t sl = strlen(subject) + 1, il = msg_id && *msg_id ? strlen(msg_id) + 1 : 0;
    struct bus_pub *p = malloc(sizeof *p + len + sl + il);
    if (!p)
        return -ENOMEM;
    p->next = NULL;
    p->cb = cb;
    p->arg = arg;
    p->deadline_ms = mono_ms() + b->publish_timeout_ms;
    p->err = 0;
    p->result = PUB_OK;
    p->len = len;
    if (len)
        memcpy(p->data, data, len);
    p->subject = p->data + len;
    memcpy(p->subject, subject, sl);
    p->msg_id = il ? p->subject + sl : NULL;
    if (il)
        memcpy(p->msg_id, msg_id, il);

    bool kick = false;
    pthread_mutex_lock(&b->lock);
    if (b->npub >= b->max_queued) {
        /* Refused: answered through the loop like every other outcome. */
        p->err = -ENOBUFS;
        p->result = PUB_UNAVAILABLE;
        if (b->done_tail)
            b->done_tail->next = p;
        else
            b->done_head = p;
        b->done_tail = p;
        kick = need_kick_locked(b);
    } else {
        if (b->pub_tail)
            b->pub_tail->next = p;
        else
            b->pub_head = p;
        b->pub_tail = p;
        b->npub++;
        pthread_cond_broadcast(&b->cond);
    }
    pthread_mutex_unlock(&b->lock);
    if (kick)
        post_kick(b);
    return 0;
}

const char *bus_msg_subject(const struct bus_msg *m) { return natsMsg_GetSubject(m->msg); }
const char *bus_msg_id(const struct bus_msg *m) { return m->id; }
const void *bus_msg_data(const struct bus_msg *m) { return natsMsg_GetData(m->msg); }
size_t bus_msg_len(const struct bus_msg *m) { return (size_t)natsMsg_GetDataLength(m->msg); }
uint64_t bus_msg_delivered(const struct bus_msg *m) { return m->delivered; }

static void msg_done(struct bus_msg *m)
{
    struct bus *b = m->b;
    pthread_mutex_lock(&b->lock);
    m->sub->inflight--;
    pthread_cond_broadcast(&b->cond);
    pthread_mutex_unlock(&b->lock);
    msg_destroy(m);
    bus_release(b);
}

void bus_ack(struct bus_msg *m)
{
    if (!m)
        return;
    if (!m->b->is_closed)
        natsMsg_Ack(m->msg, NULL);
    msg_done(m);
}

void bus_nak(struct bus_msg *m, uint32_t delay_ms)
{
    if (!m)
        return;
    if (!m->b->is_closed) {
        if (delay_ms)
            natsMsg_NakWithDelay(m->msg, (int64_t)delay_ms, NULL);
        else
            natsMsg_Nak(m->msg, NULL);
    }
    msg_done(m);
}

int bus_subscribe_durable(struct bus *b, const char *stream, const char *filter_subject,
                          const char *durable, void (*on_msg)(struct bus_msg *m, void *arg),
                          void *arg, char *err, size_t errsz)
{
    if (err && errsz)
        err[0] = '\0';
    if (!b || b->is_closed || !stream || !*stream || !durable || !*durable || !on_msg ||
        strchr(durable, '.') || strlen(stream) >= 128 || strlen(durable) >= 128) {
        if (err && errsz)
            snprintf(err, errsz,
                     "bus_subscribe_durable: stream, durable (no '.') and on_msg are required");
        return -EINVAL;
    }
    struct bus_sub *s = calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    s->b = b;
    s->on_msg = on_msg;
    s->arg = arg;
    snprintf(s->stream, sizeof s->stream, "%s", stream);
    snprintf(s->durable, sizeof s->durable, "%s", durable);

    /* The consumer is created here, not by the subscribe call: a consumer
     * the library created is deleted when the subscription goes away, and a
     * durable must outlive this process. */
    jsConsumerConfig cc;
    jsConsumerConfig_Init(&cc);
    cc.Durable = durable;
    cc.AckPolicy = js_AckExplicit;
    cc.AckWait = (int64_t)b->ack_wait_ms * 1000000;
    cc.MaxDeliver = -1;
    cc.DeliverPolicy = js_DeliverAll;
    cc.FilterSubject = filter_subject && *filter_subject ? filter_subject : NULL;
    cc.MaxAckPending = b->max_inflight > 1000 ? b->max_inflight : 1000;
    jsConsumerInfo *ci = NULL;
    jsErrCode jerr = 0;
    natsStatus st = js_AddConsumer(&ci, b->js, stream, &cc, NULL, &jerr);
    if (st != NATS_OK && jerr != 0 && st != NATS_TIMEOUT) {
        /* Exists with another config (ack wait, filter): bring it in line. */
        jsConsumerInfo_Destroy(ci);
        ci = NULL;
        jerr = 0;
        st = js_UpdateConsumer(&ci, b->js, stream, &cc, NULL, &jerr);
    }
    jsConsumerInfo_Destroy(ci);
    if (st != NATS_OK) {
        char what[300];
        snprintf(what, sizeof what, "consumer %s on stream %s", durable, stream);
        set_err(err, errsz, what, st, jerr);
        free(s);
        return status_errno(st, jerr);
    }

    jsSubOptions so;
    jsSubOptions_Init(&so);
    so.Stream = s->stream;
    so.Consumer = s->durable;
    jerr = 0;
    st = js_PullSubscribe(&s->sub, b->js, cc.FilterSubject, durable, NULL, &so, &jerr);
    if (st != NATS_OK) {
        set_err(err, errsz, "pull subscribe", st, jerr);
        free(s);
        return status_errno(st, jerr);
    }
    /* Linked before the thread starts: bus_free joins what is on the list. */
    s->next = b->subs;
    b->subs = s;
    if (pthread_create(&s->thread, NULL, fetcher_main, s) != 0) {
        if (err && errsz)
            snprintf(err, errsz, "bus: cannot start a fetcher thread");
        return -EAGAIN; /* the subscription stays listed and is freed by bus_free */
    }
    s->has_thread = true;
    return 0;
}
