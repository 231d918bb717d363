#!/usr/bin/env bash
# order-svc while NATS is down: orders are still accepted (readiness does not
# depend on NATS), their events wait in the outbox, and once NATS is back
# the relay delivers every one of them, each once (user-svc's order_count,
# the stream's message count).
#
# Stops the harness' NATS server: it disturbs every other test using NATS,
# so it must run alone (ctest RUN_SERIAL).
set -euo pipefail
ORDER_LIB_ONLY=1 source "$STRATA_SOURCE_DIR/tests/integration/test_order.sh"
harness() { bash -c ". \"$STRATA_SOURCE_DIR/tests/harness/servers.sh\" && $1"; }
stack_init
order_stack_start

[ "$(create "$ALICE_TOKEN" before-1 "$(order "$(item A 1 100)")")" = 201 ] || fail "create: $(body)"
wait_sent || fail "first event not sent"
wait_order_count "$ALICE_ID" 1 || fail "first event not consumed"
stream0=$(stream_msgs)
ok "baseline: one order, its event delivered"

harness harness_stop_nats || fail "cannot stop NATS"
for i in 1 2 3 4 5; do
  [ "$(create "$ALICE_TOKEN" "down-$i" "$(order "$(item D "$i" 100)")")" = 201 ] || fail "create while NATS is down: $(body)"
done
[ "$(curl -s -o /dev/null -w '%{http_code}' "$O/readyz")" = 200 ] || fail "readiness must not depend on NATS"
sleep 1
[ "$(osql "SELECT count(*) FROM outbox WHERE sent_at IS NULL")" = 5 ] || fail "events should wait in the outbox"
[ "$(user_order_count "$ALICE_ID")" = 1 ] || fail "nothing can have been delivered"
curl -s "$O/metrics" | grep -q '^strata_outbox_pending 5$' || fail "backlog gauge: $(curl -s "$O/metrics" | grep outbox)"
ok "NATS down: 5 orders accepted (201), API ready, 5 events kept in the outbox"

harness harness_start_nats_again || fail "cannot start NATS again"
wait_sent || fail "outbox not drained after NATS came back: $(osql "SELECT count(*) FROM outbox WHERE sent_at IS NULL") unsent"
wait_order_count "$ALICE_ID" 6 || fail "order_count $(user_order_count "$ALICE_ID"), expected 6"
[ "$(stream_msgs)" = $((stream0 + 5)) ] || fail "stream has $(stream_msgs) messages, expected $((stream0 + 5))"
sleep 1
[ "$(user_order_count "$ALICE_ID")" = 6 ] || fail "an event was counted twice"
sleep 0.5
curl -s "$O/metrics" | grep -q '^strata_outbox_pending 0$' || fail "backlog gauge after: $(curl -s "$O/metrics" | grep outbox)"
ok "NATS back: every event delivered exactly once"
echo "$pass checks passed"
