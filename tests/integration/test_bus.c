/* bus.h against a real nats-server -js (STRATA_TEST_NATS_URL from
 * scripts/with-servers): streams, publish with acks and dedupe, durable pull
 * consumers with ack/nak/redelivery and resumption by a second instance.
 * Each run uses its own stream name. The outage test is test_bus_outage.c. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <nats/nats.h>

#include "check.h"
#include "core/bus.h"
#include "core/loop.h"

static const char *nats_url;
static struct loop *L;
static char stream[64];  /* unique per run */
static char prefix[64];  /* subjects: <prefix>.<...> */

static bool run_until_int(const int *v, int want, uint64_t ms)
{
    loop_update_time(L);
    uint64_t end = loop_now_ms(L) + ms;
    while (*v < want && loop_now_ms(L) < end)
        loop_run_once(L, 10);
    return *v >= want;
}

static void run_for(uint64_t ms)
{
    loop_update_time(L);
    uint64_t end = loop_now_ms(L) + ms;
    while (loop_now_ms(L) < end)
        loop_run_once(L, 10);
}

static struct bus *new_bus(uint32_t ack_wait_ms)
{
    struct bus_config cfg = { .url = nats_url, .name = "test_bus", .ack_wait_ms = ack_wait_ms };
    struct bus *b = NULL;
    char err[256];
    int rc = bus_new(L, &cfg, &b, err, sizeof err);
    CHECK_INT(rc, 0);
    if (rc)
        fprintf(stderr, "bus_new: %s\n", err);
    return b;
}

/* ---- publish bookkeeping ---- */

struct pubs {
    int done;
    int ok;
    int last_err;
    bool in_call;
    int in_call_cbs;
};

static void pub_cb(int err, void *arg)
{
    struct pubs *p = arg;
    p->done++;
    if (err == 0)
        p->ok++;
    else
        p->last_err = err;
    if (p->in_call)
        p->in_call_cbs++;
}

static int publish(struct bus *b, struct pubs *p, const char *subject, const char *id,
                   const char *data)
{
    p->in_call = true;
    int rc = bus_publish(b, subject, id, data, strlen(data), pub_cb, p);
    p->in_call = false;
    return rc;
}

/* ---- consume bookkeeping ---- */

enum { MAXM = 256 };

struct inbox {
    int n;
    char data[MAXM][32];
    char id[MAXM][32];
    char subject[MAXM][96];
    uint64_t delivered[MAXM];
    int mode;        /* 0 ack, 1 nak once then ack, 2 keep (no ack yet), 3 ack first `limit`, keep the rest */
    int limit;
    struct bus_msg *kept[MAXM];
    int nkept;
};

static void on_msg(struct bus_msg *m, void *arg)
{
    struct inbox *in = arg;
    int i = in->n < MAXM ? in->n : MAXM - 1;
    size_t len = bus_msg_len(m) < 31 ? bus_msg_len(m) : 31;
    memcpy(in->data[i], bus_msg_data(m), len);
    in->data[i][len] = '\0';
    snprintf(in->id[i], sizeof in->id[i], "%s", bus_msg_id(m));
    snprintf(in->subject[i], sizeof in->subject[i], "%s", bus_msg_subject(m));
    in->delivered[i] = bus_msg_delivered(m);
    in->n++;
    switch (in->mode) {
    case 1:
        if (bus_msg_delivered(m) == 1)
            bus_nak(m, 0);
        else
            bus_ack(m);
        break;
    case 2:
        in->kept[in->nkept++] = m;
        break;
    case 3:
        if (in->n <= in->limit)
            bus_ack(m);
        else
            in->kept[in->nkept++] = m;
        break;
    default:
        bus_ack(m);
    }
}

static uint64_t stream_count(struct bus *b)
{
    uint64_t n = 0;
    char err[256];
    int rc = bus_stream_msg_count(b, stream, &n, err, sizeof err);
    CHECK_INT(rc, 0);
    if (rc)
        fprintf(stderr, "stream count: %s\n", err);
    return n;
}

/* ---- tests ---- */

static void test_ensure_stream_twice(void)
{
    struct bus *b = new_bus(0);
    if (!b)
        return;
    char s1[96], s2[96], err[256];
    snprintf(s1, sizeof s1, "%s.>", prefix);
    const char *subjects[] = { s1, NULL };
    CHECK_INT(bus_ensure_stream(b, stream, subjects, err, sizeof err), 0);
    CHECK_INT(bus_ensure_stream(b, stream, subjects, err, sizeof err), 0);
    /* Changing the subjects updates the stream in place. */
    snprintf(s2, sizeof s2, "%s_extra.>", prefix);
    const char *more[] = { s1, s2, NULL };
    CHECK_INT(bus_ensure_stream(b, stream, more, err, sizeof err), 0);
    CHECK_INT(bus_ensure_stream(b, stream, subjects, err, sizeof err), 0);
    CHECK_INT(bus_ensure_stream(b, "", subjects, err, sizeof err), -EINVAL);
    CHECK(bus_is_connected(b));
    bus_free(b);
    run_for(20);
}

static void test_publish_and_consume_100(void)
{
    struct bus *b = new_bus(0);
    if (!b)
        return;
    char subject[96];
    snprintf(subject, sizeof subject, "%s.orders.created", prefix);
    uint64_t before = stream_count(b);
    struct pubs p = { 0 };
    for (int i = 0; i < 100; i++) {
        char id[32], data[32];
        snprintf(id, sizeof id, "ev-%d", i);
        snprintf(data, sizeof data, "order %d", i);
        CHECK_INT(publish(b, &p, subject, id, data), 0);
    }
    CHECK_INT(p.in_call_cbs, 0);
    CHECK(run_until_int(&p.done, 100, 10000));
    CHECK_INT(p.ok, 100);
    CHECK_INT(stream_count(b) - before, 100);

    static struct inbox in;
    memset(&in, 0, sizeof in);
    char err[256];
    CHECK_INT(bus_subscribe_durable(b, stream, subject, "consumer100", on_msg, &in, err, sizeof err),
              0);
    CHECK(run_until_int(&in.n, 100, 10000));
    CHECK_INT(in.n, 100);
    int in_order = 0;
    for (int i = 0; i < 100 && i < in.n; i++) {
        char id[32], data[32];
        snprintf(id, sizeof id, "ev-%d", i);
        snprintf(data, sizeof data, "order %d", i);
        if (!strcmp(in.id[i], id) && !strcmp(in.data[i], data) && in.delivered[i] == 1 &&
            !strcmp(in.subject[i], subject))
            in_order++;
    }
    CHECK_INT(in_order, 100);
    /* Everything acked: nothing comes again. */
    run_for(500);
    CHECK_INT(in.n, 100);
    bus_free(b);
    run_for(20);
}

static void test_dedupe(void)
{
    struct bus *b = new_bus(0);
    if (!b)
        return;
    char subject[96];
    snprintf(subject, sizeof subject, "%s.dedupe", prefix);
    uint64_t before = stream_count(b);
    struct pubs p = { 0 };
    CHECK_INT(publish(b, &p, subject, "same-id", "first"), 0);
    CHECK_INT(publish(b, &p, subject, "same-id", "second"), 0);
    CHECK_INT(publish(b, &p, subject, "other-id", "third"), 0);
    CHECK(run_until_int(&p.done, 3, 10000));
    CHECK_INT(p.ok, 3); /* a duplicate is acked as one: success */
    CHECK_INT(stream_count(b) - before, 2);

    static struct inbox in;
    memset(&in, 0, sizeof in);
    char err[256];
    CHECK_INT(bus_subscribe_durable(b, stream, subject, "dedupe", on_msg, &in, err, sizeof err), 0);
    CHECK(run_until_int(&in.n, 2, 10000));
    run_for(300);
    CHECK_INT(in.n, 2);
    CHECK_STR(in.data[0], "first");
    CHECK_STR(in.id[0], "same-id");
    CHECK_STR(in.data[1], "third");

    /* No id: no dedupe; bus_msg_id is "". */
    CHECK_INT(publish(b, &p, subject, NULL, "anon"), 0);
    CHECK_INT(publish(b, &p, subject, NULL, "anon"), 0);
    CHECK(run_until_int(&in.n, 4, 10000));
    CHECK_STR(in.id[2], "");
    CHECK_STR(in.data[3], "anon");
    bus_free(b);
    run_for(20);
}

static void test_nak_redelivery(void)
{
    struct bus *b = new_bus(0);
    if (!b)
        return;
    char subject[96], err[256];
    snprintf(subject, sizeof subject, "%s.nak", prefix);
    static struct inbox in;
    memset(&in, 0, sizeof in);
    in.mode = 1;
    CHECK_INT(bus_subscribe_durable(b, stream, subject, "nakker", on_msg, &in, err, sizeof err), 0);
    struct pubs p = { 0 };
    publish(b, &p, subject, "nak-1", "payload");
    CHECK(run_until_int(&in.n, 2, 10000));
    CHECK_STR(in.data[0], "payload");
    CHECK_INT(in.delivered[0], 1);
    CHECK_STR(in.data[1], "payload");
    CHECK_STR(in.id[1], "nak-1");
    CHECK_INT(in.delivered[1], 2);
    run_for(300);
    CHECK_INT(in.n, 2);
    bus_free(b);
    run_for(20);
}

static void test_unacked_redelivery(void)
{
    struct bus *b = new_bus(1000); /* 1 s ack wait */
    if (!b)
        return;
    char subject[96], err[256];
    snprintf(subject, sizeof subject, "%s.unacked", prefix);
    static struct inbox in;
    memset(&in, 0, sizeof in);
    in.mode = 2;
    CHECK_INT(bus_subscribe_durable(b, stream, subject, "slowpoke", on_msg, &in, err, sizeof err),
              0);
    struct pubs p = { 0 };
    publish(b, &p, subject, "u-1", "again");
    CHECK(run_until_int(&in.n, 1, 10000));
    loop_update_time(L);
    uint64_t t0 = loop_now_ms(L);
    CHECK(run_until_int(&in.n, 2, 5000));
    uint64_t waited = loop_now_ms(L) - t0;
    CHECK(waited >= 700 && waited < 4000);
    CHECK_INT(in.delivered[1], 2);
    CHECK_STR(in.id[1], "u-1");
    for (int i = 0; i < in.nkept; i++)
        bus_ack(in.kept[i]);
    in.nkept = 0;
    in.mode = 0;
    run_for(1500);
    CHECK_INT(in.n, 2);
    bus_free(b);
    run_for(20);
}

/* A second instance with the same durable resumes after what the first one
 * acked. The first acks 5 of 10 and is freed while holding the other 5
 * (as a crashed or killed worker would): they come again after the ack wait
 * (1 s here), to the second instance, and the acked ones never do. */
static void test_second_instance_resumes(void)
{
    char subject[96], err[256];
    snprintf(subject, sizeof subject, "%s.resume", prefix);
    struct bus *b1 = new_bus(1000);
    if (!b1)
        return;
    struct pubs p = { 0 };
    for (int i = 0; i < 10; i++) {
        char id[32], data[32];
        snprintf(id, sizeof id, "r-%d", i);
        snprintf(data, sizeof data, "%d", i);
        publish(b1, &p, subject, id, data);
    }
    CHECK(run_until_int(&p.done, 10, 10000));
    CHECK_INT(p.ok, 10);
    static struct inbox in1;
    memset(&in1, 0, sizeof in1);
    in1.mode = 3;
    in1.limit = 5;
    CHECK_INT(bus_subscribe_durable(b1, stream, subject, "resumer", on_msg, &in1, err, sizeof err),
              0);
    CHECK(run_until_int(&in1.n, 10, 10000));
    bus_free(b1);
    /* Held across bus_free: acking now is allowed and does nothing. */
    for (int i = 0; i < in1.nkept; i++)
        bus_ack(in1.kept[i]);
    run_for(20);

    struct bus *b2 = new_bus(1000);
    if (!b2)
        return;
    static struct inbox in2;
    memset(&in2, 0, sizeof in2);
    CHECK_INT(bus_subscribe_durable(b2, stream, subject, "resumer", on_msg, &in2, err, sizeof err),
              0);
    CHECK(run_until_int(&in2.n, 5, 10000));
    run_for(1500);
    CHECK_INT(in2.n, 5);
    int seen[10] = { 0 };
    for (int i = 0; i < in2.n && i < MAXM; i++) {
        int v = atoi(in2.data[i]);
        if (v >= 0 && v < 10)
            seen[v]++;
    }
    for (int v = 0; v < 10; v++)
        CHECK_INT(seen[v], v < 5 ? 0 : 1);
    bus_free(b2);
    run_for(20);
}

static void test_publish_errors(void)
{
    struct bus *b = new_bus(0);
    if (!b)
        return;
    struct pubs p = { 0 };
    /* No stream takes this subject. */
    CHECK_INT(publish(b, &p, "strata.nobody.listens.here", "x", "data"), 0);
    CHECK(run_until_int(&p.done, 1, 10000));
    CHECK_INT(p.ok, 0);
    CHECK_INT(p.last_err, -ENOENT);
    CHECK_INT(bus_publish(b, NULL, NULL, "x", 1, pub_cb, &p), -EINVAL);
    CHECK_INT(bus_publish(b, "a", NULL, "x", 1, NULL, &p), -EINVAL);

    /* Freed with publishes pending: their callbacks are not called. */
    char subject[96];
    snprintf(subject, sizeof subject, "%s.dropped", prefix);
    struct pubs q = { 0 };
    for (int i = 0; i < 20; i++)
        publish(b, &q, subject, NULL, "bye");
    bus_free(b);
    run_for(50);
    CHECK_INT(q.done, 0);
}

static void test_bad_config(void)
{
    struct bus *b = NULL;
    char err[256];
    CHECK_INT(bus_new(L, &(struct bus_config){ .url = NULL }, &b, err, sizeof err), -EINVAL);
    CHECK(b == NULL);
    CHECK(err[0] != '\0');
}

/* No server: bus_new still succeeds (connects in the background) and
 * publishes fail fast instead of queueing. */
static void test_server_down_at_start(void)
{
    struct bus_config cfg = { .url = "nats://127.0.0.1:1", .publish_timeout_ms = 1000 };
    struct bus *b = NULL;
    char err[256];
    CHECK_INT(bus_new(L, &cfg, &b, err, sizeof err), 0);
    if (!b)
        return;
    CHECK(!bus_is_connected(b));
    struct pubs p = { 0 };
    loop_update_time(L);
    uint64_t t0 = loop_now_ms(L);
    CHECK_INT(publish(b, &p, "a.b", "id", "x"), 0);
    CHECK_INT(p.in_call_cbs, 0);
    CHECK(run_until_int(&p.done, 1, 3000));
    CHECK(loop_now_ms(L) - t0 < 500);
    CHECK_INT(p.last_err, -ENOTCONN);
    bus_free(b);
    run_for(20);
}

int main(void)
{
    nats_url = getenv("STRATA_TEST_NATS_URL");
    if (!nats_url) {
        fprintf(stderr, "STRATA_TEST_NATS_URL not set: run under scripts/with-servers\n");
        return 1;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(stream, sizeof stream, "TEST_%d_%lx", (int)getpid(), (long)ts.tv_nsec);
    snprintf(prefix, sizeof prefix, "t%d_%lx", (int)getpid(), (long)ts.tv_nsec);
    L = loop_new();
    if (!L)
        return 1;
    RUN(test_bad_config);
    RUN(test_server_down_at_start);
    RUN(test_ensure_stream_twice);
    RUN(test_publish_and_consume_100);
    RUN(test_dedupe);
    RUN(test_nak_redelivery);
    RUN(test_unacked_redelivery);
    RUN(test_second_instance_resumes);
    RUN(test_publish_errors);

    struct bus *b = new_bus(0);
    if (b) {
        char err[256];
        CHECK_INT(bus_delete_stream(b, stream, err, sizeof err), 0);
        bus_free(b);
    }
    run_for(20);
    loop_free(L);
    nats_Close();
    return check_done();
}
