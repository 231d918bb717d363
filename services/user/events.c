/* events.c — applies order events to users, idempotently. */
#include "events.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/bus.h"
#include "core/json.h"
#include "core/log.h"
#include "core/loop.h"
#include "core/metrics.h"
#include "core/pg.h"
#include "store.h"
#include "validate.h"

/* 2 s between attempts to set up the subscription while NATS is away. */
#define SETUP_RETRY_MS 2000
/* 1 s before a message whose transaction failed (database away) comes back. */
#define RETRY_DELAY_MS 1000
/* 200: a uuid or a ULID with a prefix fits many times over; longer is not an id. */
#define EVENT_ID_MAX 200

struct events {
    struct loop *loop;
    struct pg_pool *db;
    struct bus *bus;
    struct loop_timer setup_timer;
    bool is_subscribed; /* written on the loop thread, read by /readyz on any worker */
};

struct event_op {
    struct events *ev;
    struct bus_msg *m;
    struct pg_tx *tx;
    char event_id[EVENT_ID_MAX + 1];
    char user_id[UUID_LEN + 1];
    char occurred_at[64];
    const char *delta; /* "1" created, "0" cancelled */
};

static struct metrics_counter *m_applied, *m_duplicate, *m_poison, *m_retry, *m_unknown_user;

int events_init_metrics(void)
{
    struct metrics_family *f;
    int rc = metrics_register_counter(metrics_default(), "strata_user_order_events_total",
                                      "Order events consumed by user-svc, by outcome.", METRICS_LABELS("result"), &f);
    if (rc < 0)
        return rc;
    m_applied = metrics_counter_with(f, "applied");
    m_duplicate = metrics_counter_with(f, "duplicate");
    m_poison = metrics_counter_with(f, "poison");
    m_retry = metrics_counter_with(f, "retry");
    m_unknown_user = metrics_counter_with(f, "unknown_user");
    return 0;
}

static void poison(struct bus_msg *m, const char *why)
{
    log_warn("order event dropped (poison)", LOG_STR("reason", why), LOG_STR("subject", bus_msg_subject(m)),
             LOG_STR("msg_id", bus_msg_id(m)), LOG_UINT("delivered", bus_msg_delivered(m)));
    metrics_counter_add(m_poison, 1);
    bus_ack(m);
}

static void op_retry(struct event_op *op, int err, const char *what)
{
    log_warn("order event not applied; will be redelivered", LOG_STR("stage", what), LOG_ERRNO("error", err),
             LOG_STR("event_id", op->event_id));
    metrics_counter_add(m_retry, 1);
    bus_nak(op->m, RETRY_DELAY_MS);
    free(op);
}

/* SQL errors on the event's own data (bad time, bad uuid): it will never apply. */
static bool is_data_error(const PGresult *res)
{
    return strncmp(pg_sqlstate(res), "22", 2) == 0;
}

static void committed(int err, void *arg)
{
    struct event_op *op = arg;
    if (err) {
        op_retry(op, err, "commit");
        return;
    }
    log_debug("order event applied", LOG_STR("event_id", op->event_id), LOG_STR("user_id", op->user_id));
    bus_ack(op->m);
    free(op);
}

static void applied(int err, PGresult *res, void *arg)
{
    struct event_op *op = arg;
    if (err) {
        pg_tx_rollback(op->tx);
        op_retry(op, err, "update");
        return;
    }
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        pg_tx_rollback(op->tx);
        if (is_data_error(res)) {
            poison(op->m, PQresultErrorMessage(res));
            free(op);
        } else {
            op_retry(op, -EIO, "update");
        }
        return;
    }
    if (strcmp(PQcmdTuples(res), "0") == 0) {
        /* The event stays processed: a user created later must not inherit it. */
        log_warn("order event for an unknown user", LOG_STR("event_id", op->event_id), LOG_STR("user_id", op->user_id));
        metrics_counter_add(m_unknown_user, 1);
    } else {
        metrics_counter_add(m_applied, 1);
    }
    int rc = pg_tx_commit(op->tx, committed, op);
    if (rc < 0)
        op_retry(op, rc, "commit");
}

static void marked(int err, PGresult *res, void *arg)
{
    struct event_op *op = arg;
    if (err || PQresultStatus(res) != PGRES_TUPLES_OK) {
        pg_tx_rollback(op->tx);
        op_retry(op, err ? err : -EIO, "dedupe");
        return;
    }
    if (PQntuples(res) == 0) {
        pg_tx_rollback(op->tx);
        log_debug("order event already processed", LOG_STR("event_id", op->event_id));
        metrics_counter_add(m_duplicate, 1);
        bus_ack(op->m);
        free(op);
        return;
    }
    const char *params[] = { op->user_id, op->delta, op->occurred_at };
    int rc = pg_tx_query(op->tx, SQL_EVENT_APPLY, 3, params, applied, op);
    if (rc < 0) {
        pg_tx_rollback(op->tx);
        op_retry(op, rc, "update");
    }
}

static void began(int err, struct pg_tx *tx, void *arg)
{
    struct event_op *op = arg;
    if (err) {
        op_retry(op, err, "begin");
        return;
    }
    op->tx = tx;
    const char *params[] = { op->event_id };
    int rc = pg_tx_query(tx, SQL_EVENT_MARK, 1, params, marked, op);
    if (rc < 0) {
        pg_tx_rollback(tx);
        op_retry(op, rc, "dedupe");
    }
}

/* Fills op from the event body; a client-safe reason when it is unusable. */
static int parse_event(struct event_op *op, const void *data, size_t len, const char **why)
{
    json_t *ev;
    struct json_error e;
    int rc = -EINVAL;
    if (json_parse_body(str_make(data, len), 8, &ev, &e) < 0) {
        *why = "not JSON";
        return -EINVAL;
    }
    const char *id, *type, *user, *at;
    *why = e.message;
    if (json_get_string(ev, "event_id", true, 1, EVENT_ID_MAX, &id, &e) < 0 ||
        json_get_string(ev, "type", true, 1, 64, &type, &e) < 0 ||
        json_get_string(ev, "user_id", true, 1, 64, &user, &e) < 0 ||
        json_get_string(ev, "occurred_at", true, 1, 63, &at, &e) < 0) {
        *why = "missing or malformed field";
        goto out;
    }
    if (strcmp(type, "order.created") == 0) {
        op->delta = "1";
    } else if (strcmp(type, "order.cancelled") == 0) {
        /* order_count counts orders placed: a cancellation does not
         * un-place one. The event is still recorded as processed. */
        op->delta = "0";
    } else {
        *why = "unknown event type";
        goto out;
    }
    if (!uuid_parse(str_from_cstr(user), op->user_id)) {
        *why = "user_id is not a uuid";
        goto out;
    }
    snprintf(op->event_id, sizeof op->event_id, "%s", id);
    snprintf(op->occurred_at, sizeof op->occurred_at, "%s", at);
    rc = 0;
out:
    json_decref(ev);
    return rc;
}

static void on_msg(struct bus_msg *m, void *arg)
{
    struct events *ev = arg;
    struct event_op *op = calloc(1, sizeof *op);
    if (!op) {
        bus_nak(m, RETRY_DELAY_MS);
        return;
    }
    op->ev = ev;
    op->m = m;
    const char *why;
    if (parse_event(op, bus_msg_data(m), bus_msg_len(m), &why) < 0) {
        poison(m, why);
        free(op);
        return;
    }
    int rc = pg_tx_begin(ev->db, began, op);
    if (rc < 0)
        op_retry(op, rc, "begin");
}

static int setup(struct events *ev)
{
    char err[256];
    static const char *const subjects[] = { "orders.*", NULL };
    if (!bus_is_connected(ev->bus))
        return -ENOTCONN;
    if (bus_ensure_stream(ev->bus, EVENTS_STREAM, subjects, err, sizeof err) < 0 ||
        bus_subscribe_durable(ev->bus, EVENTS_STREAM, NULL, EVENTS_DURABLE, on_msg, ev, err, sizeof err) < 0) {
        log_warn("order events: cannot subscribe yet", LOG_STR("error", err));
        return -EAGAIN;
    }
    __atomic_store_n(&ev->is_subscribed, true, __ATOMIC_RELEASE);
    log_info("order events: subscribed", LOG_STR("stream", EVENTS_STREAM), LOG_STR("durable", EVENTS_DURABLE));
    return 0;
}

static void setup_tick(struct loop_timer *t)
{
    struct events *ev = t->data;
    if (setup(ev) < 0)
        loop_timer_start(&ev->setup_timer, SETUP_RETRY_MS);
}

struct events *events_new(struct loop *l, struct pg_pool *db, const char *nats_url)
{
    struct events *ev = calloc(1, sizeof *ev);
    if (!ev)
        return NULL;
    ev->loop = l;
    ev->db = db;
    char err[256];
    struct bus_config cfg = { .url = nats_url, .name = "user-svc" };
    if (bus_new(l, &cfg, &ev->bus, err, sizeof err) < 0) {
        log_error("order events: bad NATS configuration", LOG_STR("error", err));
        free(ev);
        return NULL;
    }
    loop_timer_init(l, &ev->setup_timer, setup_tick, ev);
    if (setup(ev) < 0)
        loop_timer_start(&ev->setup_timer, SETUP_RETRY_MS);
    return ev;
}

void events_free(struct events *ev)
{
    if (!ev)
        return;
    loop_timer_stop(&ev->setup_timer);
    bus_free(ev->bus);
    free(ev);
}

bool events_is_ready(const struct events *ev, char *reason, size_t n)
{
    if (!ev) {
        snprintf(reason, n, "order-event consumer not started");
        return false;
    }
    if (!bus_is_connected(ev->bus)) {
        snprintf(reason, n, "NATS not connected");
        return false;
    }
    if (!__atomic_load_n(&ev->is_subscribed, __ATOMIC_ACQUIRE)) {
        snprintf(reason, n, "not subscribed to %s yet", EVENTS_STREAM);
        return false;
    }
    return true;
}
