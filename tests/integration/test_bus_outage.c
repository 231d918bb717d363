/* bus.h through a NATS outage: the harness' nats-server is stopped
 * (publishes must fail within the publish timeout, no hang) and started
 * again on the same ports and store (the bus must reconnect on its own,
 * publishing must work again and the durable consumer must resume). Stops a
 * shared server, so it must not run in parallel with other tests using NATS
 * (RUN_SERIAL). */
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

static struct loop *L;

static int harness(const char *fn)
{
    const char *src = getenv("STRATA_SOURCE_DIR");
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "bash -c '. \"%s/tests/harness/servers.sh\" && %s'",
             src ? src : ".", fn);
    return system(cmd);
}

static bool run_until_int(const int *v, int want, uint64_t ms)
{
    loop_update_time(L);
    uint64_t end = loop_now_ms(L) + ms;
    while (*v < want && loop_now_ms(L) < end)
        loop_run_once(L, 10);
    return *v >= want;
}

static bool wait_connected(struct bus *b, bool up, uint64_t ms)
{
    loop_update_time(L);
    uint64_t end = loop_now_ms(L) + ms;
    while (bus_is_connected(b) != up && loop_now_ms(L) < end)
        loop_run_once(L, 10);
    return bus_is_connected(b) == up;
}

struct pubs {
    int done, ok, last_err;
};

static void pub_cb(int err, void *arg)
{
    struct pubs *p = arg;
    p->done++;
    if (err == 0)
        p->ok++;
    else
        p->last_err = err;
}

struct inbox {
    int n;
    int seen[64];
};

static void on_msg(struct bus_msg *m, void *arg)
{
    struct inbox *in = arg;
    char buf[16] = { 0 };
    size_t len = bus_msg_len(m) < 15 ? bus_msg_len(m) : 15;
    memcpy(buf, bus_msg_data(m), len);
    int v = atoi(buf);
    if (v >= 0 && v < 64 && in->seen[v]++ == 0)
        in->n++;
    bus_ack(m);
}

static void test_outage(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    char stream[64], subject[96], filter[96], err[256];
    snprintf(stream, sizeof stream, "OUTAGE_%d_%lx", (int)getpid(), (long)ts.tv_nsec);
    snprintf(subject, sizeof subject, "o%d_%lx.events", (int)getpid(), (long)ts.tv_nsec);
    snprintf(filter, sizeof filter, "%s", subject);

    struct bus_config cfg = { .url = getenv("STRATA_TEST_NATS_URL"), .name = "outage",
                              .publish_timeout_ms = 2000 };
    struct bus *b = NULL;
    CHECK_INT(bus_new(L, &cfg, &b, err, sizeof err), 0);
    if (!b)
        return;
    const char *subjects[] = { subject, NULL };
    CHECK_INT(bus_ensure_stream(b, stream, subjects, err, sizeof err), 0);
    static struct inbox in;
    CHECK_INT(bus_subscribe_durable(b, stream, filter, "outage", on_msg, &in, err, sizeof err), 0);

    struct pubs p = { 0 };
    for (int i = 0; i < 5; i++) {
        char data[16], id[16];
        snprintf(data, sizeof data, "%d", i);
        snprintf(id, sizeof id, "o-%d", i);
        bus_publish(b, subject, id, data, strlen(data), pub_cb, &p);
    }
    CHECK(run_until_int(&p.done, 5, 10000));
    CHECK_INT(p.ok, 5);
    CHECK(run_until_int(&in.n, 5, 10000));

    CHECK_INT(harness("harness_stop_nats"), 0);
    CHECK(wait_connected(b, false, 5000));

    /* Down: each publish fails within the publish timeout. */
    struct pubs down = { 0 };
    loop_update_time(L);
    uint64_t t0 = loop_now_ms(L);
    for (int i = 0; i < 3; i++)
        CHECK_INT(bus_publish(b, subject, "down", "x", 1, pub_cb, &down), 0);
    CHECK(run_until_int(&down.done, 3, 5000));
    CHECK(loop_now_ms(L) - t0 <= 2500);
    CHECK_INT(down.ok, 0);
    CHECK(down.last_err == -ENOTCONN || down.last_err == -ETIMEDOUT);

    CHECK_INT(harness("harness_start_nats_again"), 0);
    CHECK(wait_connected(b, true, 10000));

    /* Publishing works again (JetStream may need a moment after a restart:
     * retry each message like an outbox relay would), and the consumer
     * resumes with the new messages. */
    for (int i = 5; i < 10; i++) {
        char data[16], id[16];
        snprintf(data, sizeof data, "%d", i);
        snprintf(id, sizeof id, "o-%d", i);
        bool ok = false;
        for (int tries = 0; tries < 20 && !ok; tries++) {
            struct pubs one = { 0 };
            bus_publish(b, subject, id, data, strlen(data), pub_cb, &one);
            run_until_int(&one.done, 1, 5000);
            ok = one.ok == 1;
            if (!ok)
                run_until_int(&(int){ 0 }, 1, 250);
        }
        CHECK(ok);
    }
    CHECK(run_until_int(&in.n, 10, 15000));
    CHECK_INT(in.n, 10);
    for (int i = 0; i < 10; i++)
        CHECK(in.seen[i] >= 1);

    bus_delete_stream(b, stream, err, sizeof err);
    bus_free(b);
}

int main(void)
{
    if (!getenv("STRATA_TEST_NATS_URL") || !getenv("STRATA_TEST_NATS_DIR")) {
        fprintf(stderr, "STRATA_TEST_NATS_URL not set: run under scripts/with-servers\n");
        return 1;
    }
    L = loop_new();
    if (!L)
        return 1;
    RUN(test_outage);
    for (int i = 0; i < 5; i++)
        loop_run_once(L, 1);
    loop_free(L);
    nats_Close();
    return check_done();
}
