/* events.h — the order-event consumer: JetStream stream ORDERS, durable
 * consumer "user-svc", keeps users.order_count and last_order_at.
 *
 * Exactly-once effect on top of at-least-once delivery: each event is
 * applied in one transaction together with its id in processed_events, and
 * acked only after that transaction commits. A redelivered event finds its
 * id already there and is acked without a change. A message that can never
 * be applied (not JSON, missing fields, bad uuid or time) is logged, counted
 * and acked, so that it cannot block the consumer forever (poison).
 *
 * Lives on one loop (worker 0's), with that worker's database pool. */
#ifndef USER_EVENTS_H
#define USER_EVENTS_H

#include <stdbool.h>
#include <stddef.h>

struct loop;
struct pg_pool;
struct events;

#define EVENTS_STREAM "ORDERS"
#define EVENTS_DURABLE "user-svc"

/* Registers the metrics (once per process; call before the workers start). */
int events_init_metrics(void);
/* Connects to nats_url and subscribes (in the background when NATS is not
 * up yet: retried every 2 s). NULL on a bad URL or allocation failure. */
struct events *events_new(struct loop *l, struct pg_pool *db, const char *nats_url);
void events_free(struct events *e);
/* For /readyz: connected and subscribed. Thread-safe. */
bool events_is_ready(const struct events *e, char *reason, size_t n);

#endif
