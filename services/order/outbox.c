/* outbox.c — the transactional outbox relay: one per process, on worker 0's
 * loop. It reads unsent rows (oldest first), publishes each to JetStream
 * with Nats-Msg-Id = event id, and marks a row sent only after the stream
 * acknowledged it. Consequences:
 *   - NATS down: publishes fail fast (-ENOTCONN), rows stay unsent, the
 *     relay retries with exponential backoff (200 ms doubling to 5 s);
 *   - killed between the commit and the publish, or between the ack and the
 *     UPDATE: the row is still unsent and is published again at restart; the
 *     stream's duplicate window (2 min) stores it once, and consumers dedupe
 *     by event id beyond that window (at-least-once delivery, exactly-once
 *     effect);
 *   - several replicas: each relays every unsent row it sees; the same
 *     Nats-Msg-Id makes the copies one message.
 * Order: rows are published in id order, one batch at a time; a failed
 * message is retried in the next batch, so order holds except around a
 * failure. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/bus.h"
#include "core/log.h"
#include "core/loop.h"
#include "order.h"

/* 200 ms: the poll period when idle (a commit also kicks the relay at once,
 * so this only bounds the delay for rows written by another replica). */
#define RELAY_POLL_MS 200
/* Backoff after a failure: 200 ms doubling to 5 s. */
#define RELAY_BACKOFF_MAX_MS 5000
/* 100 rows per batch: one query and one UPDATE per 100 events. */
#define RELAY_BATCH 100

struct relay_msg {
    struct outbox_relay *relay;
    long long id;
    char *subject, *event_id, *payload;
    int result; /* 1 pending, 0 acked, <0 failed */
};

struct outbox_relay {
    struct loop *loop;
    struct pg_pool *db;
    struct bus *bus;
    struct loop_timer timer;
    bool is_busy;       /* a poll, a batch or its UPDATE in flight */
    bool has_kick;      /* kicked while busy: poll again right after */
    bool has_stream;    /* ORDERS ensured */
    int is_stopped;     /* atomic */
    int kick_posted;    /* atomic: a kick is queued on the loop */
    uint32_t backoff_ms;
    struct relay_msg msgs[RELAY_BATCH];
    size_t nmsgs, nanswered;
    struct metrics_counter *m_published, *m_failed;
    struct metrics_gauge *m_pending;
};

static const char *const stream_subjects[] = { "orders.*", NULL };

static void relay_tick(struct outbox_relay *r);

static void timer_cb(struct loop_timer *t) { relay_tick(t->data); }

static void schedule(struct outbox_relay *r, uint32_t ms)
{
    if (!__atomic_load_n(&r->is_stopped, __ATOMIC_ACQUIRE))
        loop_timer_start(&r->timer, ms);
}

static void batch_clear(struct outbox_relay *r)
{
    for (size_t i = 0; i < r->nmsgs; i++) {
        free(r->msgs[i].subject);
        free(r->msgs[i].event_id);
        free(r->msgs[i].payload);
    }
    r->nmsgs = r->nanswered = 0;
}

static void failed(struct outbox_relay *r)
{
    r->backoff_ms = r->backoff_ms ? r->backoff_ms * 2 : RELAY_POLL_MS;
    if (r->backoff_ms > RELAY_BACKOFF_MAX_MS)
        r->backoff_ms = RELAY_BACKOFF_MAX_MS;
    r->is_busy = false;
    r->has_kick = false; /* a kick must not defeat the backoff */
    schedule(r, r->backoff_ms);
}

static void finished(struct outbox_relay *r, bool was_full)
{
    r->backoff_ms = 0;
    r->is_busy = false;
    bool again = was_full || r->has_kick;
    r->has_kick = false;
    schedule(r, again ? 0 : RELAY_POLL_MS);
}

static void marked(int err, PGresult *res, void *arg)
{
    struct outbox_relay *r = arg;
    bool was_full = r->nmsgs == RELAY_BATCH;
    bool any_failed = false;
    for (size_t i = 0; i < r->nmsgs; i++)
        any_failed |= r->msgs[i].result != 0;
    batch_clear(r);
    if (err < 0 || PQresultStatus(res) != PGRES_COMMAND_OK) {
        log_warn("outbox: marking events sent failed; they will be published again (deduplicated)",
                 LOG_ERRNO("error", err ? err : EIO), LOG_STR("sqlstate", pg_sqlstate(res)));
        failed(r);
    } else if (any_failed) {
        failed(r);
    } else {
        finished(r, was_full);
    }
}

static void mark_sent(struct outbox_relay *r)
{
    struct buf ids;
    buf_init(&ids, 32 * RELAY_BATCH);
    int rc = buf_append_cstr(&ids, "{");
    size_t nok = 0;
    for (size_t i = 0; rc == 0 && i < r->nmsgs; i++) {
        if (r->msgs[i].result != 0)
            continue;
        rc = buf_appendf(&ids, "%s%lld", nok ? "," : "", r->msgs[i].id);
        nok++;
    }
    if (rc == 0)
        rc = buf_append(&ids, "}", 2); /* with the NUL */
    if (rc == 0 && nok == 0) {
        buf_free(&ids);
        batch_clear(r);
        failed(r);
        return;
    }
    const char *params[] = { buf_rptr(&ids) };
    if (rc == 0)
        rc = pg_query(r->db, store_sql_outbox_mark_sent, 1, params, marked, r);
    buf_free(&ids);
    if (rc < 0) {
        batch_clear(r);
        failed(r);
    }
}

static void on_published(int err, void *arg)
{
    struct relay_msg *m = arg;
    struct outbox_relay *r = m->relay;
    m->result = err;
    if (err == 0) {
        metrics_counter_add(r->m_published, 1);
    } else {
        if (err == -ENOENT) /* the stream is gone (deleted?): ensure it again before the next batch */
            r->has_stream = false;
        metrics_counter_add(r->m_failed, 1);
        log_warn("outbox: publish failed; will retry", LOG_STR("event_id", m->event_id),
                 LOG_STR("subject", m->subject), LOG_ERRNO("error", err));
    }
    if (++r->nanswered == r->nmsgs)
        mark_sent(r);
}

static void publish_all(struct outbox_relay *r)
{
    size_t n = r->nmsgs;
    for (size_t i = 0; i < n; i++) {
        struct relay_msg *m = &r->msgs[i];
        m->result = 1;
        int rc = bus_publish(r->bus, m->subject, m->event_id, m->payload, strlen(m->payload), on_published, m);
        if (rc < 0) {
            m->result = rc;
            r->nanswered++;
        }
    }
    if (r->nanswered == n) /* nothing was queued (every call failed) */
        mark_sent(r);
}

static char *dup_value(const PGresult *res, int row, int col)
{
    return strdup(PQgetvalue(res, row, col));
}

static void polled(int err, PGresult *res, void *arg)
{
    struct outbox_relay *r = arg;
    if (err < 0 || PQresultStatus(res) != PGRES_TUPLES_OK) {
        log_warn("outbox: reading unsent events failed", LOG_ERRNO("error", err ? err : EIO),
                 LOG_STR("sqlstate", pg_sqlstate(res)));
        failed(r);
        return;
    }
    int rows = PQntuples(res);
    metrics_gauge_set(r->m_pending, rows);
    if (rows > 0 && !bus_is_connected(r->bus)) { /* known backlog, nowhere to send it yet */
        failed(r);
        return;
    }
    if (rows == 0) {
        finished(r, false);
        return;
    }
    r->nmsgs = r->nanswered = 0;
    for (int i = 0; i < rows && i < RELAY_BATCH; i++) {
        struct relay_msg *m = &r->msgs[r->nmsgs];
        m->relay = r;
        m->id = strtoll(PQgetvalue(res, i, 0), NULL, 10);
        m->subject = dup_value(res, i, 1);
        m->event_id = dup_value(res, i, 2);
        m->payload = dup_value(res, i, 3);
        m->result = 1;
        r->nmsgs++;
        if (!m->subject || !m->event_id || !m->payload) {
            batch_clear(r);
            failed(r);
            return;
        }
    }
    publish_all(r);
}

static void relay_tick(struct outbox_relay *r)
{
    if (__atomic_load_n(&r->is_stopped, __ATOMIC_ACQUIRE))
        return;
    if (r->is_busy) {
        r->has_kick = true;
        return;
    }
    loop_timer_stop(&r->timer);
    if (!r->has_stream && bus_is_connected(r->bus)) {
        /* NATS was down at start. Blocking, but only once, right after the
         * connection came up: one local round trip (core has no async
         * bus_ensure_stream). */
        char err[200];
        if (bus_ensure_stream(r->bus, "ORDERS", stream_subjects, err, sizeof err) < 0) {
            log_warn("outbox: cannot ensure stream ORDERS", LOG_STR("error", err));
            r->is_busy = true;
            failed(r);
            return;
        }
        r->has_stream = true;
    }
    r->is_busy = true;
    char limit[16];
    snprintf(limit, sizeof limit, "%d", RELAY_BATCH);
    const char *params[] = { limit };
    if (pg_query(r->db, store_sql_outbox_unsent, 1, params, polled, r) < 0)
        failed(r);
}

struct outbox_relay *outbox_relay_new(struct loop *l, struct pg_pool *db, const char *nats_url)
{
    struct outbox_relay *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->loop = l;
    r->db = db;
    loop_timer_init(l, &r->timer, timer_cb, r);
    char err[256];
    struct bus_config cfg = { .url = nats_url, .name = "order-svc outbox" };
    if (bus_new(l, &cfg, &r->bus, err, sizeof err) < 0) {
        log_error("outbox: cannot create the NATS connection", LOG_STR("error", err));
        free(r);
        return NULL;
    }
    if (bus_is_connected(r->bus)) {
        if (bus_ensure_stream(r->bus, "ORDERS", stream_subjects, err, sizeof err) == 0)
            r->has_stream = true;
        else
            log_warn("outbox: cannot ensure stream ORDERS yet", LOG_STR("error", err));
    } else {
        log_warn("outbox: NATS not reachable at start; events stay in the outbox until it is",
                 LOG_STR("nats_url", nats_url));
    }
    struct metrics_registry *reg = metrics_default();
    struct metrics_family *f;
    if (metrics_register_counter(reg, "strata_outbox_published_total",
                                 "Outbox events acknowledged by JetStream.", NULL, &f) == 0)
        r->m_published = metrics_counter_with(f);
    if (metrics_register_gauge(reg, "strata_outbox_pending",
                               "Unsent outbox events seen by the relay's last poll (at most one batch, 100).", NULL,
                               &f) == 0)
        r->m_pending = metrics_gauge_with(f);
    if (metrics_register_counter(reg, "strata_outbox_publish_failures_total",
                                 "Outbox publishes that failed and will be retried.", NULL, &f) == 0)
        r->m_failed = metrics_counter_with(f);
    schedule(r, 0);
    return r;
}

static void kick_cb(void *arg)
{
    struct outbox_relay *r = arg;
    __atomic_store_n(&r->kick_posted, 0, __ATOMIC_RELEASE);
    if (__atomic_load_n(&r->is_stopped, __ATOMIC_ACQUIRE))
        return;
    if (r->is_busy)
        r->has_kick = true;
    else if (r->backoff_ms == 0)
        relay_tick(r);
}

void outbox_relay_kick(struct outbox_relay *r)
{
    if (!r || __atomic_load_n(&r->is_stopped, __ATOMIC_ACQUIRE))
        return;
    if (__atomic_exchange_n(&r->kick_posted, 1, __ATOMIC_ACQ_REL) == 0 && loop_post(r->loop, kick_cb, r) < 0)
        __atomic_store_n(&r->kick_posted, 0, __ATOMIC_RELEASE);
}

void outbox_relay_stop(struct outbox_relay *r)
{
    if (!r)
        return;
    __atomic_store_n(&r->is_stopped, 1, __ATOMIC_RELEASE);
    loop_timer_stop(&r->timer);
    bus_free(r->bus); /* pending publish callbacks are dropped */
    r->bus = NULL;
}

void outbox_relay_free(struct outbox_relay *r)
{
    if (!r)
        return;
    batch_clear(r);
    free(r);
}
