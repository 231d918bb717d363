#!/usr/bin/env bash
# `strata up` on deploy/ end to end, as README tells a user: the whole
# platform (data layer, control plane, CA, gateway ×2, auth ×2, user ×2,
# order v1 ×2 + v2 ×1 = 9 replicas, each service with its sidecar) from the manifests, in a temp
# state directory on free ports; then the README walkthrough through the
# gateway over TLS (register, log in, create an order, list orders, see the
# metrics); status JSON, logs, events; `strata down` leaves no process.
set -euo pipefail
: "${STRATA_BUILD_DIR:?run through ctest (make test)}"
: "${STRATA_SOURCE_DIR:?run through ctest (make test)}"
source "$STRATA_SOURCE_DIR/tests/integration/lib/platform.sh"
trap "" PIPE
B=$STRATA_BUILD_DIR
S=$(mktemp -d /tmp/strata-up.XXXXXX)
chmod 0711 "$S" # PostgreSQL runs as its own user and must reach STATE/data
STATE=$S/state
pass=0
ok() { pass=$((pass + 1)); echo "ok   $*"; }
port() { "$B/strata-test-freeport"; }
strata() { "$B/strata" "$@" --state "$STATE"; }

# Every process whose command line or working directory names our state
# directory is ours (replicas run in STATE/pods/<replica>, servers keep
# their data in STATE/data).
ours() { platform_pids "$STATE"; }

cleanup() {
  local rc=$?
  trap - EXIT
  if [ -f "$STATE/control.json" ]; then "$B/strata" down --state "$STATE" --timeout 60 >/dev/null 2>&1 || true; fi
  local left; left=$(ours)
  if [ -n "$left" ]; then
    echo "cleanup: killing leftovers: $left" >&2
    kill -KILL $left 2>/dev/null || true
  fi
  # PostgreSQL runs as its own user from the state dir: the kill above
  # covers it (its command line names the data directory).
  if [ "$rc" != 0 ]; then
    echo "--- control.log (last 40 lines)" >&2; tail -40 "$STATE/control.log" >&2 2>/dev/null || true
    for f in "$STATE"/logs/*/*.log; do
      [ -f "$f" ] && { echo "--- $f (last 8 lines)" >&2; tail -8 "$f" >&2; }
    done
  fi
  [ -n "${STRATA_KEEP:-}" ] || rm -rf "$S"
  exit "$rc"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

ADMIN=$(port) HTTP=$(port) HTTPS=$(port) PROM=$(port) AM=$(port)
t0=$(date +%s%N)
"$B/strata" up -f "$STRATA_SOURCE_DIR/deploy" --state "$STATE" --admin "127.0.0.1:$ADMIN" \
  --gateway-http "127.0.0.1:$HTTP" --gateway-https "127.0.0.1:$HTTPS" \
  --prometheus-port "$PROM" --alertmanager-port "$AM" --backoff-base-ms 500 --timeout 150 >"$S/up.out" \
  || { cat "$S/up.out"; fail "strata up"; }
t1=$(date +%s%N)
echo "note: strata up took $(((t1 - t0) / 1000000)) ms"
grep -q "https://127.0.0.1:$HTTPS" "$S/up.out" || fail "up does not print the gateway URL: $(cat "$S/up.out")"
CA=$(jq -r .ca_file "$STATE/control.json")
[ -s "$CA" ] || fail "no CA certificate at $CA"
grep -q "$CA" "$S/up.out" || fail "up does not print the CA path"
ok "strata up returned with every replica ready ($(((t1 - t0) / 1000000)) ms)"

# status --output json: endpoints and workloads with the documented fields.
strata status --output json >"$S/status.json" || fail "status"
jq -e '.ready == true' "$S/status.json" >/dev/null || fail "status not ready"
for w in gateway auth-svc user-svc order-svc-v1 order-svc-v2; do
  jq -e --arg w "$w" '.workloads[] | select(.name == $w) | (.replicas == .ready) and (.restarts | type == "number")
     and (.version | type == "string") and (.kind == "Deployment")' "$S/status.json" >/dev/null \
    || fail "status: workload $w: $(jq -c --arg w "$w" '.workloads[] | select(.name == $w)' "$S/status.json")"
done
[ "$(jq "[.workloads[].replicas] | add" "$S/status.json")" = 9 ] || fail "expected 9 replicas"
jq -e ".endpoints.gateway_https == \"https://127.0.0.1:$HTTPS\"" "$S/status.json" >/dev/null || fail "endpoints"
ok "status --output json: 5 workloads, 9 replicas ready, endpoints"

# The README walkthrough, over TLS with the local CA.
G=https://localhost:$HTTPS
c() { curl -sS --max-time 15 --cacert "$CA" --resolve "localhost:$HTTPS:127.0.0.1" "$@"; }
email="alice-$$@example.com"
code=$(c -o "$S/reg" -w '%{http_code}' -X POST "$G/v1/users" -H 'Content-Type: application/json' \
  --data-binary "{\"email\":\"$email\",\"password\":\"correct horse battery\",\"name\":\"Alice\"}")
[ "$code" = 201 ] || fail "register: $code $(cat "$S/reg")"
ok "register through the gateway (TLS verified against the printed CA): 201"
code=$(c -o "$S/login" -w '%{http_code}' -X POST "$G/v1/auth/login" -H 'Content-Type: application/json' \
  --data-binary "{\"email\":\"$email\",\"password\":\"correct horse battery\"}")
[ "$code" = 200 ] || fail "login: $code $(cat "$S/login")"
TOKEN=$(jq -r .access_token "$S/login")
[ -n "$TOKEN" ] && [ "$TOKEN" != null ] || fail "no access token"
ok "log in: 200 with an access token"
code=$(c -o "$S/me" -w '%{http_code}' "$G/v1/users/me" -H "Authorization: Bearer $TOKEN")
[ "$code" = 200 ] && jq -e --arg e "$email" '.email == $e' "$S/me" >/dev/null || fail "users/me: $code $(cat "$S/me")"
ok "GET /v1/users/me with the token"
ORDER='{"items":[{"sku":"BOOK-1","quantity":2,"unit_price_cents":1250}],"currency":"EUR","shipping_address":{"line1":"1 Main St","city":"Paris","postal_code":"75001","country":"FR"}}'
code=$(c -o "$S/order" -w '%{http_code}' -X POST "$G/v1/orders" -H "Authorization: Bearer $TOKEN" \
  -H 'Content-Type: application/json' -H "Idempotency-Key: readme-$$" --data-binary "$ORDER")
[ "$code" = 201 ] || fail "create order: $code $(cat "$S/order")"
OID=$(jq -r .id "$S/order")
ok "create an order: 201 ($OID)"
code=$(c -o "$S/orders" -w '%{http_code}' "$G/v1/orders" -H "Authorization: Bearer $TOKEN")
[ "$code" = 200 ] && grep -q "$OID" "$S/orders" || fail "list orders: $code $(cat "$S/orders")"
ok "list orders: the new order is there"
code=$(c -o "$S/noauth" -w '%{http_code}' "$G/v1/orders")
[ "$code" = 401 ] || fail "orders without a token: $code"
code=$(c -o "$S/internal" -w '%{http_code}' "$G/internal/v1/users/$OID")
[ "$code" = 404 ] || fail "/internal through the gateway: $code"
ok "no token → 401; /internal is not routed by the gateway (404)"
code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$HTTP/v1/orders")
[ "$code" != 000 ] || fail "plain HTTP listener"
ok "the HTTP listener answers ($code)"

# Metrics: Prometheus is up and scrapes the control plane.
curl -sf --max-time 5 "http://127.0.0.1:$PROM/-/ready" >/dev/null || fail "prometheus not ready"
curl -sf --max-time 5 "http://127.0.0.1:$AM/-/ready" >/dev/null || fail "alertmanager not ready"
ok "Prometheus and Alertmanager ready"

# Logs and events.
strata logs order-svc-v1 >"$S/logs" || fail "strata logs"
grep -q '"level"' "$S/logs" || fail "no JSON log lines for order-svc-v1"
strata logs order-svc-v1 --level error >/dev/null || fail "strata logs --level"
ONE=$(jq -r '.workloads[] | select(.name == "order-svc-v1") | .pods[0].name' "$S/status.json")
strata logs order-svc-v1 --replica "$ONE" >"$S/logs1" || fail "strata logs --replica"
[ -s "$S/logs1" ] && ! grep -v "^$ONE " "$S/logs1" | grep -q . || fail "strata logs --replica $ONE: lines of other replicas"
strata events >"$S/events" || fail "strata events"
grep -q Ready "$S/events" || fail "no Ready events"
TOKEN_ADMIN=$(cat "$STATE/admin.token")
curl -sf --max-time 10 -H "Authorization: Bearer $TOKEN_ADMIN" \
  "http://127.0.0.1:$ADMIN/v1/logs?workload=order-svc-v1&container=app&limit=5" >"$S/logs.json" || fail "GET /v1/logs"
[ "$(jq '.lines | length' "$S/logs.json")" -ge 1 ] && jq -e '.lines[0].replica | startswith("order-svc-v1-")' "$S/logs.json" >/dev/null \
  || fail "GET /v1/logs: $(head -c 300 "$S/logs.json")"
ok "strata logs and events; the admin API's log search"

# down: graceful, nothing left behind.
mapfile -t PIDS < <(ours)
((${#PIDS[@]} >= 18)) || fail "expected at least 18 processes of ours, found ${#PIDS[@]}"
strata down --timeout 90 >"$S/down.out" || fail "strata down: $(cat "$S/down.out")"
left=$(ours)
[ -z "$left" ] || fail "processes left after down: $left"
# A zombie is gone too: PID 1 here may not reap the control plane's orphans.
alive() { platform_alive "$1"; }
for p in "${PIDS[@]}"; do ! alive "$p" || fail "pid $p survived down: $(tr '\0' ' ' <"/proc/$p/cmdline")"; done
ok "strata down: all ${#PIDS[@]} processes gone"

# Under ASan/UBSan (make test-asan) every process of the platform is
# instrumented: a report in any log is a failure.
if grep -l -E "ERROR: (Address|Leak)Sanitizer|runtime error:" "$STATE/control.log" "$STATE"/logs/*/*.log 2>/dev/null; then
  grep -h -A20 -E "ERROR: (Address|Leak)Sanitizer|runtime error:" "$STATE/control.log" "$STATE"/logs/*/*.log | head -60 >&2
  fail "sanitizer reports in the logs above"
fi
ok "no sanitizer report in any log"
echo "PASS test_platform_up ($pass checks)"
