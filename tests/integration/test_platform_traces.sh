#!/usr/bin/env bash
# One request, one trace: `strata up` on deploy/ (free ports, temp state),
# register + log in, then POST /v1/orders through the gateway over TLS with
# a traceparent of our own. Order creation checks the user with user-svc
# (services/order/orders.c: create_authed → service_call → user_checked)
# and writes the order in PostgreSQL, so the trace crosses
#   gateway → sidecar(order) → order-svc → sidecar(order, outbound)
#           → sidecar(user) → user-svc → PostgreSQL, and order-svc → PostgreSQL.
# Every component exports OTLP/HTTP JSON to the control plane, which keeps
# the spans (src/control/traces.c); GET /v1/traces/{id} must return them as
# one tree: the gateway's server span is the only child of our span, every
# other span's parent is in the trace, children start after their parents
# start and end before they end, and every hop is there.
set -euo pipefail
: "${STRATA_BUILD_DIR:?run through ctest (make test)}"
: "${STRATA_SOURCE_DIR:?run through ctest (make test)}"
source "$STRATA_SOURCE_DIR/tests/integration/lib/platform.sh"
trap "" PIPE
B=$STRATA_BUILD_DIR
S=$(mktemp -d /tmp/strata-traces.XXXXXX)
chmod 0711 "$S" # PostgreSQL runs as its own user and must reach STATE/data
STATE=$S/state
pass=0
ok() { pass=$((pass + 1)); echo "ok   $*"; }
port() { "$B/strata-test-freeport"; }

# Every process whose command line or working directory names our state
# directory is ours (as in test_platform_up.sh).
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
  if [ "$rc" != 0 ]; then
    echo "--- control.log (last 30 lines)" >&2; tail -30 "$STATE/control.log" >&2 2>/dev/null || true
    [ -s "$S/trace.json" ] && { echo "--- the trace" >&2; jq -c '.spans[] | {service, name, kind, span_id, parent_span_id}' "$S/trace.json" >&2; }
  fi
  [ -n "${STRATA_KEEP:-}" ] || rm -rf "$S"
  exit "$rc"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

ADMIN=$(port) HTTP=$(port) HTTPS=$(port) PROM=$(port) AM=$(port)
"$B/strata" up -f "$STRATA_SOURCE_DIR/deploy" --state "$STATE" --admin "127.0.0.1:$ADMIN" \
  --gateway-http "127.0.0.1:$HTTP" --gateway-https "127.0.0.1:$HTTPS" \
  --prometheus-port "$PROM" --alertmanager-port "$AM" --backoff-base-ms 500 --timeout 150 >"$S/up.out" \
  || { cat "$S/up.out"; fail "strata up"; }
CA=$(jq -r .ca_file "$STATE/control.json")
ADMIN_TOKEN=$(cat "$STATE/admin.token")
A="http://127.0.0.1:$ADMIN"
ok "strata up"

# The receiver: no token to post, a token to read.
code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$A/v1/traces")
[ "$code" = 401 ] || fail "GET /v1/traces without the token: $code"
code=$(curl -s -o "$S/empty" -w '%{http_code}' --max-time 5 -X POST -H 'Content-Type: application/json' \
  --data '{"resourceSpans":[]}' "$A/v1/traces")
[ "$code" = 200 ] || fail "POST /v1/traces: $code $(cat "$S/empty")"
ok "the control plane receives OTLP/HTTP (no token) and guards the queries (401)"

G=https://localhost:$HTTPS
c() { curl -sS --max-time 15 --cacert "$CA" --resolve "localhost:$HTTPS:127.0.0.1" "$@"; }
email="trace-$$@example.com"
code=$(c -o "$S/reg" -w '%{http_code}' -X POST "$G/v1/users" -H 'Content-Type: application/json' \
  --data-binary "{\"email\":\"$email\",\"password\":\"correct horse battery\",\"name\":\"Tracy\"}")
[ "$code" = 201 ] || fail "register: $code $(cat "$S/reg")"
code=$(c -o "$S/login" -w '%{http_code}' -X POST "$G/v1/auth/login" -H 'Content-Type: application/json' \
  --data-binary "{\"email\":\"$email\",\"password\":\"correct horse battery\"}")
[ "$code" = 200 ] || fail "login: $code $(cat "$S/login")"
TOKEN=$(jq -r .access_token "$S/login")
ok "register and log in through the gateway"

# Our own trace id and span id: the request's trace is known in advance.
TRACE=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
PARENT=$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')
ORDER='{"items":[{"sku":"BOOK-1","quantity":1,"unit_price_cents":1250}],"currency":"EUR","shipping_address":{"line1":"1 Main St","city":"Paris","postal_code":"75001","country":"FR"}}'
code=$(c -o "$S/order" -w '%{http_code}' -X POST "$G/v1/orders" -H "Authorization: Bearer $TOKEN" \
  -H 'Content-Type: application/json' -H "Idempotency-Key: trace-$$" -H "traceparent: 00-$TRACE-$PARENT-01" \
  --data-binary "$ORDER")
[ "$code" = 201 ] || fail "create order: $code $(cat "$S/order")"
ok "POST /v1/orders with traceparent 00-$TRACE-$PARENT-01: 201"

# Poll until every hop has exported (each batches for up to 1 s).
fetch() { curl -s -o "$S/trace.json" -w '%{http_code}' --max-time 5 -H "Authorization: Bearer $ADMIN_TOKEN" "$A/v1/traces/$TRACE"; }
# The proxies export as OTEL_SERVICE_NAME ("gateway", "sidecar", set by the
# controller); a strata-proxy that ignores it exports as "strata-proxy".
GW_SVC='^(gateway|strata-proxy)$' SC_SVC='^(sidecar|strata-proxy)$'
# every hop has exported: app services, proxy roles, PostgreSQL under both apps.
have() {
  jq -e --arg gw "$GW_SVC" --arg sc "$SC_SVC" '
    [.spans[] | .service] as $s |
    ([.spans[] | select(.attributes["db.system"] == "postgresql") | .service] | unique) as $pg |
    ($s | index("order-svc")) and ($s | index("user-svc"))
    and ($pg | index("order-svc")) and ($pg | index("user-svc"))
    and ([.spans[] | select((.service | test($gw)) and .name == "gateway")] | length == 1)
    and ([.spans[] | select((.service | test($sc)) and .name == "inbound")] | length >= 2)
    and ([.spans[] | select((.service | test($sc)) and .name == "outbound")] | length >= 1)
    and ([.spans[] | select(.name == "upstream")] | length >= 4)' "$S/trace.json" >/dev/null
}
deadline=$((SECONDS + 30))
until [ "$(fetch)" = 200 ] && have; do
  ((SECONDS < deadline)) || fail "the trace is not complete after 30 s: $(jq -c '[.spans[]? | [.service, .name]]' "$S/trace.json" 2>/dev/null || cat "$S/trace.json")"
  sleep 0.5
done
sleep 2 # stragglers: a span that ends after its batch left waits for the next one
[ "$(fetch)" = 200 ] || fail "GET /v1/traces/$TRACE"
echo "note: spans of the trace (service, name, kind, duration ms):"
jq -r '.spans[] | "  \(.service)\t\(.name)\t\(.kind)\t\(.duration_ms)\t\(.span_id) ← \(.parent_span_id)"' "$S/trace.json"
ok "the trace has spans from gateway, sidecars, order-svc, user-svc and PostgreSQL ($(jq '.spans | length' "$S/trace.json") spans)"

J() { jq -r "$@" "$S/trace.json"; }
# The tree: one root, the gateway's server span, under our span.
[ "$(J --arg p "$PARENT" '[.spans[] | select(.parent_span_id == $p)] | length')" = 1 ] ||
  fail "expected one child of our span: $(J -c --arg p "$PARENT" '[.spans[] | select(.parent_span_id == $p)]')"
[ "$(J --arg p "$PARENT" '.spans[] | select(.parent_span_id == $p) | "\(.name) \(.kind)"')" = "gateway server" ] ||
  fail "the root is not the gateway's server span"
[ "$(J --arg p "$PARENT" '.spans[] | select(.parent_span_id == $p) | .service')" = gateway ] ||
  echo "note: the proxies export as service \"$(J --arg p "$PARENT" '.spans[] | select(.parent_span_id == $p) | .service')\", not OTEL_SERVICE_NAME (gateway, sidecar)"
orphans=$(J --arg p "$PARENT" '[.spans[].span_id] as $ids | [.spans[] | select(.parent_span_id != $p and (.parent_span_id as $q | $ids | index($q) | not))] | length')
[ "$orphans" = 0 ] || fail "$orphans span(s) whose parent is not in the trace: $(J -c --arg p "$PARENT" '[.spans[].span_id] as $ids | [.spans[] | select(.parent_span_id != $p and (.parent_span_id as $q | $ids | index($q) | not)) | [.service, .name, .parent_span_id]]')"
[ "$(J '[.spans[].span_id] | (length == (unique | length))')" = true ] || fail "duplicate span ids"
ok "one tree: the gateway's server span is the only child of our span; every other parent is in the trace"

# Timings: a child starts after its parent starts and ends before it ends
# (1 ms of slack: every process reads the same wall clock, in µs or ns).
# Across processes (a server span under the caller's client span) the
# server ends its span only after writing the answer, which the caller may
# have read and closed its own span on already: 20 ms of slack at the end
# there, for a machine busy with other tests.
bad=$(J '(.spans | map({key: .span_id, value: .}) | from_entries) as $by |
  [.spans[] | select($by[.parent_span_id] != null) | . as $c | $by[$c.parent_span_id] as $p |
   (if $c.kind == "server" and $p.kind == "client" then 20e6 else 1e6 end) as $end_slack |
   select(($c.start_unix_nano | tonumber) < ($p.start_unix_nano | tonumber) - 1e6 or
          ($c.end_unix_nano | tonumber) > ($p.end_unix_nano | tonumber) + $end_slack) |
   "\($c.service)/\($c.name) outside \($p.service)/\($p.name) (start \((($c.start_unix_nano | tonumber) - ($p.start_unix_nano | tonumber)) / 1e6) ms, end \((($c.end_unix_nano | tonumber) - ($p.end_unix_nano | tonumber)) / 1e6) ms)"] | join("; ")')
[ -z "$bad" ] || fail "children outside their parents: $bad"
ok "every child starts after its parent starts and ends before it ends"

# The hops, each the child of the one before.
child() { # child PARENT_ID SERVICE_REGEX NAME KIND → its span id (the first, by start)
  J --arg p "$1" --arg s "$2" --arg n "$3" --arg k "$4" \
    '[.spans[] | select(.parent_span_id == $p and (.service | test($s)) and .name == $n and .kind == $k)][0].span_id // empty'
}
hop() { local id; id=$(child "$@"); [ -n "$id" ] || fail "no $2 \"$3\" ($4) span under $1"; echo "$id"; }
gw=$(hop "$PARENT" "$GW_SVC" gateway server)
gw_up=$(hop "$gw" "$GW_SVC" upstream client)
o_in=$(hop "$gw_up" "$SC_SVC" inbound server)
o_in_up=$(hop "$o_in" "$SC_SVC" upstream client)
o_srv=$(hop "$o_in_up" '^order-svc$' "POST /v1/orders" server)
o_call=$(hop "$o_srv" '^order-svc$' GET client)
o_out=$(hop "$o_call" "$SC_SVC" outbound client)
o_out_up=$(hop "$o_out" "$SC_SVC" upstream client)
u_in=$(hop "$o_out_up" "$SC_SVC" inbound server)
u_in_up=$(hop "$u_in" "$SC_SVC" upstream client)
u_srv=$(hop "$u_in_up" '^user-svc$' "GET /internal/v1/users/{id}" server)
ok "gateway → upstream → sidecar(order) inbound → upstream → order-svc POST /v1/orders → GET (client) → sidecar(order) outbound → upstream → sidecar(user) inbound → upstream → user-svc GET /internal/v1/users/{id}"

pg_under() { J --arg p "$1" '[.spans[] | select(.parent_span_id == $p and .attributes["db.system"] == "postgresql")] | length'; }
(($(pg_under "$u_srv") >= 1)) || fail "no PostgreSQL span under user-svc's server span"
(($(pg_under "$o_srv") >= 1)) || fail "no PostgreSQL span under order-svc's server span"
J --arg a "$u_srv" --arg b "$o_srv" '.spans[] | select((.parent_span_id == $a or .parent_span_id == $b) and .attributes["db.system"] == "postgresql") |
  "  pg: \(.service) \(.name) kind=\(.kind) \(.attributes["db.statement"] // "")"'
[ "$(J '[.spans[] | select(.attributes["db.system"] == "postgresql") | select(.kind != "client")] | length')" = 0 ] ||
  fail "PostgreSQL spans must be client spans"
# No literal values in statements: parameters only ($n), literals as ?.
lit=$(J '[.spans[] | select(.attributes["db.system"] == "postgresql") | .attributes["db.statement"] // "" | select(test("'"'"'[^'"'"']+'"'"'"))] | length')
[ "$lit" = 0 ] || fail "a db.statement carries a quoted literal"
ok "PostgreSQL client spans (db.system=postgresql) under user-svc's and order-svc's server spans"

# The summary list finds it too.
curl -sf --max-time 5 -H "Authorization: Bearer $ADMIN_TOKEN" "$A/v1/traces?service=user-svc&limit=50" >"$S/list.json" ||
  fail "GET /v1/traces"
jq -e --arg t "$TRACE" --arg gw "$GW_SVC" '.traces[] | select(.trace_id == $t) | (.root_service | test($gw)) and .root_name == "gateway"
  and (.services | index("order-svc")) and (.services | index("user-svc")) and .duration_ms > 0 and .error == false' \
  "$S/list.json" >/dev/null || fail "the list: $(jq -c --arg t "$TRACE" '.traces[] | select(.trace_id == $t)' "$S/list.json")"
ok "GET /v1/traces?service=user-svc lists it: root gateway, services, duration"

"$B/strata" down --state "$STATE" --timeout 90 >"$S/down.out" || fail "strata down: $(cat "$S/down.out")"
left=$(ours)
[ -z "$left" ] || fail "processes left after down: $left"
if grep -l -E "ERROR: (Address|Leak)Sanitizer|runtime error:" "$STATE/control.log" "$STATE"/logs/*/*.log 2>/dev/null; then
  grep -h -A20 -E "ERROR: (Address|Leak)Sanitizer|runtime error:" "$STATE/control.log" "$STATE"/logs/*/*.log | head -60 >&2
  fail "sanitizer reports in the logs above"
fi
ok "strata down; no sanitizer report in any log"
echo "PASS test_platform_traces ($pass checks)"
