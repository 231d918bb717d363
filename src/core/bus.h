/* bus.h — NATS JetStream on strata's event loop (libnats / cnats 3.4).
 *
 * One bus per loop (per worker thread), one NATS connection per bus.
 * cnats runs threads of its own; everything this module calls back — publish
 * results, delivered messages — is handed to the owning loop's thread (a
 * mutex-protected queue and one loop_post per batch), so callers never see
 * another thread. The loop thread never waits on the network, except in the
 * functions marked "blocking" below, which are for start-up.
 *
 * Threads, per bus:
 *   - cnats' own connection threads (reader, flusher, reconnect);
 *   - one publisher thread: bus_publish() queues the message (bounded) and
 *     returns; the thread publishes each with js_PublishMsg and waits for
 *     the stream's ack (at most until the publish's deadline), then posts
 *     the result back. One thread, so messages are published in call order
 *     and one at a time (a local round trip is ~0.1–0.3 ms: thousands per
 *     second per bus, plenty for an outbox relay). Chosen over
 *     js_PublishAsync because every publish gets an exact deadline and its
 *     own result, with no ack-to-request matching;
 *   - one fetcher thread per durable subscription (a pull consumer:
 *     natsSubscription_Fetch in batches), which pauses while max_inflight
 *     messages are delivered but not yet acked or nak'ed.
 *
 * Connection: retried in the background when the first connect fails, and
 * reconnected forever after a loss (every 250 ms). Logs: a warning when the
 * connection is lost, info when it is (re)established.
 *
 * Metrics (process registry, shared by all buses):
 *   strata_bus_published_total{result="ok|duplicate|timeout|unavailable|error"}
 *   strata_bus_received_total   (messages handed to on_msg, redeliveries included)
 *
 * Every function must be called on the loop's thread. */
#ifndef STRATA_BUS_H
#define STRATA_BUS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct loop;
struct bus;
struct bus_msg;

struct bus_config {
    const char *url;             /* NATS_URL: nats://host:port (a comma-separated list works) */
    const char *name;            /* connection name shown by the server (may be NULL) */
    uint32_t publish_timeout_ms; /* 0 → 5000: deadline from bus_publish() to its ack */
    /* Durable consumers created by bus_subscribe_durable(): */
    uint32_t ack_wait_ms;        /* 0 → 30000: unacked messages are redelivered after this */
    uint32_t max_inflight;       /* 0 → 256: delivered, not yet acked/nak'ed, per subscription */
    uint32_t max_queued;         /* 0 → 10000: publishes waiting for the publisher thread */
};

/* Creates the bus and connects. A failed first connect is not an error: it
 * is retried in the background (bus_is_connected() says when it is up).
 * 0 and *out set, or <0 with a message in err: -EINVAL (bad config, bad
 * URL), -ENOMEM, -EIO (cnats refused; its text in err). Blocks for at most
 * the first connect attempt (2 s) — start-up only. */
int bus_new(struct loop *l, const struct bus_config *cfg, struct bus **out, char *err,
            size_t errsz);

/* Stops the threads, closes the connection, frees the bus. Publishes not yet
 * answered are dropped without callbacks; messages fetched but not yet
 * handed to on_msg are nak'ed (another instance gets them at once);
 * bus_msg objects the caller still holds stay valid and must still be
 * acked or nak'ed (that is then a no-op: the server redelivers them after
 * the ack wait). Blocks until the threads have stopped: at most ~0.5 s (a
 * fetch wait) plus a 0.5 s flush of acks sent just before.
 * Run the loop at least once more before loop_free() so the last internal
 * post is released. NULL is a no-op. */
void bus_free(struct bus *b);

/* True while the NATS connection is up. Thread-safe. */
bool bus_is_connected(const struct bus *b);

/* Blocking, start-up only: creates the stream, or updates it to this
 * config if it exists. File storage, duplicate window 2 min (publishes with
 * the same Nats-Msg-Id within it are stored once). subjects is
 * NULL-terminated. 0, or <0 with err: -EINVAL, -ENOTCONN, -ETIMEDOUT,
 * -EPROTO (the server refused, e.g. subjects overlapping another stream). */
int bus_ensure_stream(struct bus *b, const char *stream, const char *const *subjects, char *err,
                      size_t errsz);

/* Blocking (tests, tools): the number of messages stored in the stream. */
int bus_stream_msg_count(struct bus *b, const char *stream, uint64_t *out, char *err,
                         size_t errsz);
/* Blocking (tests, tools): deletes the stream and its consumers. */
int bus_delete_stream(struct bus *b, const char *stream, char *err, size_t errsz);

/* Publishes data (copied) to subject through JetStream with the header
 * Nats-Msg-Id = msg_id (NULL or "": none, no dedupe). Returns 0 when cb
 * will be called, exactly once, on the loop thread, never inside this call:
 *   cb(0)          the stream acked it (also when it was a duplicate of an
 *                  id already stored: the message is in the stream once);
 *   cb(-ETIMEDOUT) no ack within publish_timeout_ms of this call (it may or
 *                  may not be stored: publish again with the same id);
 *   cb(-ENOTCONN)  the connection is down: fails fast, nothing is queued
 *                  waiting for a reconnect;
 *   cb(-ENOBUFS)   max_queued publishes already waiting;
 *   cb(-ENOENT)    no stream takes this subject;
 *   cb(-EMSGSIZE)  larger than the server's max payload;
 *   cb(-EPROTO)    JetStream answered with an error; -EIO otherwise.
 * Returns <0 without calling cb: -EINVAL (NULL argument), -ENOMEM.
 * After bus_free() pending callbacks are not called. */
int bus_publish(struct bus *b, const char *subject, const char *msg_id, const void *data,
                size_t len, void (*cb)(int err, void *arg), void *arg);

/* A delivered message: owned by the callee of on_msg until bus_ack() or
 * bus_nak(), which must be called exactly once, on the loop thread (now or
 * later). The accessors' results live as long as the message. */
const char *bus_msg_subject(const struct bus_msg *m);
const char *bus_msg_id(const struct bus_msg *m); /* Nats-Msg-Id, or "" */
const void *bus_msg_data(const struct bus_msg *m);
size_t bus_msg_len(const struct bus_msg *m);
uint64_t bus_msg_delivered(const struct bus_msg *m); /* 1 on first delivery */

/* Acknowledges (the message will not be delivered again) and frees m.
 * Non-blocking: the ack is sent without waiting for the server's confirmation,
 * so a lost ack means one more redelivery (consumers dedupe by id anyway). */
void bus_ack(struct bus_msg *m);
/* Negative ack: redeliver after delay_ms (0: at once); frees m. */
void bus_nak(struct bus_msg *m, uint32_t delay_ms);

/* Blocking, start-up only: creates (or updates) the durable pull consumer
 * `durable` on `stream` for filter_subject (NULL: the whole stream) —
 * explicit ack, ack wait cfg.ack_wait_ms, unlimited redeliveries, deliver
 * all from the start when new — and starts delivering its messages to
 * on_msg(m, arg) on the loop thread. Messages come in stream order;
 * a nak'ed or unacked message comes again later, after the ones already
 * under way. Another bus (another process or replica) with the same durable
 * shares the consumer: it resumes after the acked messages, and while both
 * run the messages are split between them. The subscription lives until
 * bus_free(). 0, or <0 with err: -EINVAL, -ENOTCONN, -ETIMEDOUT, -EPROTO
 * (no such stream, or the server refused), -ENOMEM. */
int bus_subscribe_durable(struct bus *b, const char *stream, const char *filter_subject,
                          const char *durable, void (*on_msg)(struct bus_msg *m, void *arg),
                          void *arg, char *err, size_t errsz);

#endif
