#!/usr/bin/env bash
# The console end to end: `strata up` on deploy/ (Prometheus on a free
# port), real traffic through the gateway, then the page in headless
# Chromium: its DOM must show the real platform (every workload, "2/2"
# ready counts, a non-zero request rate, the gateway → order-svc edge), and
# a screenshot is saved as a test artifact ($STRATA_ARTIFACT_DIR, else
# $STRATA_BUILD_DIR/artifacts). Also: the page needs no token and has no
# inline script; the Prometheus proxy needs one.
set -euo pipefail
: "${STRATA_BUILD_DIR:?run through ctest (make test)}"
: "${STRATA_SOURCE_DIR:?run through ctest (make test)}"
source "$STRATA_SOURCE_DIR/tests/integration/lib/platform.sh"
trap "" PIPE
B=$STRATA_BUILD_DIR
CHROMIUM=$(command -v chromium || command -v chromium-browser || true)
[ -n "$CHROMIUM" ] || { echo "FAIL: chromium is not installed (apt-get install chromium)" >&2; exit 1; }
ART=${STRATA_ARTIFACT_DIR:-$B/artifacts}
mkdir -p "$ART"
S=$(mktemp -d /tmp/strata-console.XXXXXX)
chmod 0711 "$S" # PostgreSQL runs as its own user and must reach STATE/data
STATE=$S/state
pass=0
ok() { pass=$((pass + 1)); echo "ok   $*"; }
port() { "$B/strata-test-freeport"; }
TRAFFIC_PID=
# The traffic loop ends at its next round once $S/stop exists.
stop_traffic() {
  if [ -n "$TRAFFIC_PID" ]; then
    touch "$S/stop"
    wait "$TRAFFIC_PID" 2>/dev/null || true
    TRAFFIC_PID=
  fi
}

# Every process whose command line or working directory names our state
# directory is ours (as in test_platform_up.sh).
ours() { platform_pids "$STATE"; }

cleanup() {
  local rc=$?
  trap - EXIT
  stop_traffic
  if [ -f "$STATE/control.json" ]; then "$B/strata" down --state "$STATE" --timeout 60 >/dev/null 2>&1 || true; fi
  local left; left=$(ours)
  if [ -n "$left" ]; then
    echo "cleanup: killing leftovers: $left" >&2
    kill -KILL $left 2>/dev/null || true
  fi
  if [ "$rc" != 0 ]; then
    echo "--- control.log (last 30 lines)" >&2; tail -30 "$STATE/control.log" >&2 2>/dev/null || true
    [ -f "$S/dom.html" ] && { echo "--- DOM (first 3000 bytes)" >&2; head -c 3000 "$S/dom.html" >&2; echo >&2; }
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
TOKEN=$(cat "$STATE/admin.token")
CA=$(jq -r .ca_file "$STATE/control.json")
A=http://127.0.0.1:$ADMIN
ok "strata up"

# ---- the page and the proxy over plain HTTP ----------------------------------
curl -sS --max-time 5 -D "$S/index.h" -o "$S/index.html" "$A/" || fail "GET /"
head -1 "$S/index.h" | grep -q " 200" || fail "GET / without a token: $(head -1 "$S/index.h")"
grep -qi "^content-security-policy: default-src 'self'" "$S/index.h" || fail "GET /: no CSP default-src 'self'"
grep -qi "^x-content-type-options: nosniff" "$S/index.h" || fail "GET /: no nosniff"
grep -q '<script src="/console/app.js"' "$S/index.html" || fail "GET /: the page does not load /console/app.js"
! grep -Pqi '<script(?![^>]*\bsrc=)' "$S/index.html" || fail "GET /: inline script"
! grep -Pqi '\son[a-z]+\s*=' "$S/index.html" || fail "GET /: inline event handler"
ok "GET / without a token: 200, CSP default-src 'self', nosniff, no inline script"
for f in app.js app.css; do
  code=$(curl -sS --max-time 5 -o /dev/null -w '%{http_code} %{content_type}' "$A/console/$f")
  [[ $code == "200 text/"* ]] || fail "GET /console/$f: $code"
done
code=$(curl -sS --max-time 5 -o "$S/nf" -w '%{http_code}' "$A/console/..%2fadmin.token")
[ "$code" = 404 ] && jq -e '.error.code == "not_found"' "$S/nf" >/dev/null || fail "GET /console/<odd name>: $code"
ok "GET /console/app.js, app.css: 200; an unknown file: 404 JSON"
code=$(curl -sS --max-time 5 -o "$S/unauth" -w '%{http_code}' "$A/v1/prom/query?query=up")
[ "$code" = 401 ] && jq -e '.error.code == "unauthorized"' "$S/unauth" >/dev/null || fail "prom proxy without a token: $code"
code=$(curl -sS --max-time 5 -o "$S/up.json" -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "$A/v1/prom/query?query=up")
[ "$code" = 200 ] && jq -e '.status == "success"' "$S/up.json" >/dev/null || fail "prom proxy: $code $(head -c 300 "$S/up.json")"
code=$(curl -sS --max-time 5 -o "$S/bad.json" -w '%{http_code}' -H "Authorization: Bearer $TOKEN" \
  "$A/v1/prom/query?query=sum(((")
[ "$code" = 400 ] && jq -e '.error.code == "bad_query" and (.error.request_id | length > 0)' "$S/bad.json" >/dev/null \
  || fail "prom proxy, bad query: $code $(cat "$S/bad.json")"
ok "/v1/prom/query: 401 without a token; Prometheus' answer with it; a bad query → 400 bad_query JSON"

# ---- traffic through the gateway --------------------------------------------------
G=https://localhost:$HTTPS
c() { curl -sS --max-time 10 --cacert "$CA" --resolve "localhost:$HTTPS:127.0.0.1" "$@"; }
email="console-$$@example.com"
code=$(c -o "$S/reg" -w '%{http_code}' -X POST "$G/v1/users" -H 'Content-Type: application/json' \
  --data-binary "{\"email\":\"$email\",\"password\":\"correct horse battery\",\"name\":\"Console\"}")
[ "$code" = 201 ] || fail "register: $code $(cat "$S/reg")"
code=$(c -o "$S/login" -w '%{http_code}' -X POST "$G/v1/auth/login" -H 'Content-Type: application/json' \
  --data-binary "{\"email\":\"$email\",\"password\":\"correct horse battery\"}")
[ "$code" = 200 ] || fail "login: $code $(cat "$S/login")"
JWT=$(jq -r .access_token "$S/login")
ORDER='{"items":[{"sku":"BOOK-1","quantity":1,"unit_price_cents":1250}],"currency":"EUR","shipping_address":{"line1":"1 Main St","city":"Paris","postal_code":"75001","country":"FR"}}'
# Steady light traffic until the end of the test (bounded: 2 requests per
# 0.5 s, at most 240 rounds): a 1-minute rate stays non-zero while the
# browser looks.
(
  for i in $(seq 1 240); do
    [ -f "$S/stop" ] && break
    c -o /dev/null -X POST "$G/v1/orders" -H "Authorization: Bearer $JWT" -H 'Content-Type: application/json' \
      -H "Idempotency-Key: console-$$-$i" --data-binary "$ORDER" 2>/dev/null || true
    c -o /dev/null "$G/v1/orders" -H "Authorization: Bearer $JWT" 2>/dev/null || true
    sleep 0.5
  done
) &
TRAFFIC_PID=$!
ok "traffic through the gateway (register, login, orders)"

# ---- Prometheus has the data ----------------------------------------------------------
pq() { curl -sS --max-time 5 -G "http://127.0.0.1:$PROM/api/v1/query" --data-urlencode "query=$1" | jq -r '.data.result[0].value[1] // "0"'; }
deadline=$(($(date +%s) + 90))
until awk -v a="$(pq 'sum(rate(strata_http_requests_total{job="app",service="order-svc"}[1m]))')" \
          -v b="$(pq 'sum(rate(strata_proxy_upstream_requests_total{job="gateway",cluster="order-svc"}[1m]))')" \
          'BEGIN { exit !(a > 0 && b > 0) }'; do
  (($(date +%s) < deadline)) || fail "Prometheus has no non-zero order-svc rate after 90 s"
  sleep 2
done
ok "Prometheus: non-zero request rate for order-svc and gateway → order-svc"

# ---- the page in headless Chromium --------------------------------------------------------
URL="$A/#token=$TOKEN"
chrome() {
  timeout 90 "$CHROMIUM" --headless --no-sandbox --disable-gpu --disable-dev-shm-usage --no-first-run \
    --user-data-dir="$S/chrome" --virtual-time-budget=15000 "$@" 2>>"$S/chrome.err"
}
chrome --dump-dom "$URL" >"$S/dom.html" || fail "chromium --dump-dom: $(tail -5 "$S/chrome.err")"
[ -s "$S/dom.html" ] || fail "chromium printed no DOM"
grep -q 'id="main"' "$S/dom.html" || fail "the DOM is not the console's"
grep -q '<span id="problems" class="problems"></span>' "$S/dom.html" \
  || fail "the page reports problems: $(grep -o '<span id="problems"[^<]*' "$S/dom.html")"
! grep -q 'id="main" hidden' "$S/dom.html" || fail "the console shows the token form: the token was not taken"
curl -sS --max-time 5 -H "Authorization: Bearer $TOKEN" "$A/v1/status" >"$S/status.json"
for w in $(jq -r '.workloads[].name' "$S/status.json"); do
  r=$(jq -r --arg w "$w" '.workloads[] | select(.name == $w) | "\(.ready)/\(.replicas)"' "$S/status.json")
  grep -Pq "data-workload=\"$w\"><td><b>$w</b>.*?</td><td class=\"num [a-z]+\">$r</td>" "$S/dom.html" \
    || fail "the workloads table lacks $w with $r ready"
done
grep -q '>2/2<' "$S/dom.html" || fail "no 2/2 ready count"
ok "the DOM lists every workload ($(jq -r '[.workloads[].name] | join(", ")' "$S/status.json")) with its ready count"
rate=$(grep -oP 'data-service="order-svc"><div class="head"><b>order-svc</b><span class="num rate" data-rate="\K[0-9.e+-]+' \
  "$S/dom.html" || true)
awk -v r="${rate:-0}" 'BEGIN { exit !(r > 0) }' || fail "no non-zero request rate for order-svc in the DOM (got '$rate')"
ok "the DOM shows order-svc's request rate: $rate/s"
erate=$(grep -oP 'data-edge="gateway→order-svc"><td>gateway → order-svc</td><td class="num" data-rate="\K[0-9.e+-]+' \
  "$S/dom.html" || true)
awk -v r="${erate:-0}" 'BEGIN { exit !(r > 0) }' || fail "no gateway → order-svc edge with traffic in the DOM (got '$erate')"
grep -Fq '<g class="edge ' "$S/dom.html" && grep -Fq 'data-edge="gateway→order-svc"' "$S/dom.html" \
  || fail "the topology graph has no gateway → order-svc edge"
ok "the topology shows the edge gateway → order-svc at $erate/s"
grep -q 'class="chart rate"' "$S/dom.html" && grep -q '<polyline' "$S/dom.html" || fail "no RED chart drawn"
ok "RED charts drawn"
grep -Eq 'no traces yet|class="wf"|data-trace=' "$S/dom.html" || fail "the traces panel shows neither traces nor 'no traces yet'"
grep -Eq 'no alerts|data-alert=' "$S/dom.html" || fail "the alerts panel is empty"
grep -Eq 'no rollout in progress|class="rollout"' "$S/dom.html" || fail "the rollouts panel is empty"
ok "traces, alerts and rollouts panels rendered"

rm -f "$ART/console.png"
chrome --screenshot="$ART/console.png" --window-size=1400,1000 "$URL" >/dev/null || fail "chromium --screenshot"
[ -f "$ART/console.png" ] || fail "no screenshot at $ART/console.png"
[ "$(head -c 8 "$ART/console.png" | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ] || fail "the screenshot is not a PNG"
size=$(stat -c %s "$ART/console.png")
((size > 30000)) || fail "the screenshot is tiny ($size bytes)"
ok "screenshot: $ART/console.png ($size bytes)"

stop_traffic
"$B/strata" down --state "$STATE" --timeout 90 >/dev/null || fail "strata down"
[ -z "$(ours)" ] || fail "processes left after down: $(ours)"
if grep -l -E "ERROR: (Address|Leak)Sanitizer|runtime error:" "$STATE/control.log" "$STATE"/logs/*/*.log 2>/dev/null; then
  grep -h -A20 -E "ERROR: (Address|Leak)Sanitizer|runtime error:" "$STATE/control.log" "$STATE"/logs/*/*.log | head -60 >&2
  fail "sanitizer reports in the logs above"
fi
ok "strata down; no sanitizer report"
echo "$pass checks passed"
