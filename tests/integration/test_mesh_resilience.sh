#!/usr/bin/env bash
# The engine's resilience features end to end, with real processes:
# mirroring (a copy reaches the shadow with Host "-shadow", the client gets
# the primary's answer), fault injection (abort, delay), kill -9 of one of
# three replicas under wrk with retries → zero non-2xx, the circuit breaker
# opening under overload (503 overflow, x-strata-overflow: 1) and closing
# after, outlier detection ejecting a failing endpoint and re-admitting it,
# and retries held to the retry budget when every endpoint fails.
set -euo pipefail
source "$STRATA_SOURCE_DIR/tests/integration/lib/stack.sh"
stack_init
trap "" PIPE
pass=0
ok() { pass=$((pass + 1)); echo "ok   $*"; }
command -v wrk >/dev/null || stack_fail "wrk is missing"
BACKEND=$STRATA_SOURCE_DIR/tests/integration/lib/backend.py

stack_start a strata-demo-service OTEL_SERVICE_NAME=r1
stack_start b strata-demo-service OTEL_SERVICE_NAME=r2
stack_start c strata-demo-service OTEL_SERVICE_NAME=r3
backend() { # NAME MODE ARG → NAME_PORT
  local port; port=$(stack_port)
  python3 "$BACKEND" "$port" "$2" "$3" >"$STACK_WORK/$1.log" 2>&1 &
  STACK_PIDS+=("$!")
  up() { curl -s -o /dev/null "http://127.0.0.1:$port/__count"; }
  stack_wait 10 up || stack_fail "backend $1"
  printf -v "$(echo "$1" | tr a-z A-Z)_PORT" '%s' "$port"
}
backend shadow record "$STACK_WORK/shadow.txt"
backend bad status 500
backend bad2 status 503
port=$(stack_port); admin=$(stack_port)
cat >"$STACK_WORK/gw.json" <<JSON
{"version": "resilience", "admin": {"address": "127.0.0.1:$admin"},
 "listeners": [{"name": "http", "address": "127.0.0.1:$port"}],
 "clusters": [
   {"name": "primary", "endpoints": ["127.0.0.1:$A_PORT"]},
   {"name": "shadow", "endpoints": ["127.0.0.1:$SHADOW_PORT"]},
   {"name": "three", "endpoints": ["127.0.0.1:$A_PORT", "127.0.0.1:$B_PORT", "127.0.0.1:$C_PORT"],
    "outlier_detection": {"consecutive_gateway_errors": 1, "interval_ms": 200, "base_ejection_ms": 5000, "max_ejection_percent": 34}},
   {"name": "narrow", "endpoints": ["127.0.0.1:$A_PORT"], "circuit_breaker": {"max_requests": 2}},
   {"name": "pooled", "endpoints": ["127.0.0.1:$A_PORT"], "circuit_breaker": {"max_connections": 2, "max_pending_requests": 2}},
   {"name": "flaky", "endpoints": ["127.0.0.1:$A_PORT", "127.0.0.1:$BAD_PORT"],
    "outlier_detection": {"consecutive_5xx": 3, "interval_ms": 100, "base_ejection_ms": 1500, "max_ejection_percent": 50}},
   {"name": "failing", "endpoints": ["127.0.0.1:$BAD_PORT", "127.0.0.1:$BAD2_PORT"]}],
 "routes": [
   {"name": "mirrored", "prefix": "/mirrored", "rewrite_prefix": "/v1/echo", "cluster": "primary",
    "mirror": {"cluster": "shadow", "percent": 100}},
   {"name": "abort", "prefix": "/abort", "cluster": "primary", "fault": {"abort_status": 503, "abort_percent": 100}},
   {"name": "delay", "prefix": "/delay", "rewrite_prefix": "/v1/hello", "cluster": "primary", "fault": {"delay_ms": 300}},
   {"name": "three", "prefix": "/v1/hello", "cluster": "three",
    "retries": {"attempts": 2, "retry_on": ["connect-failure", "reset", "gateway-error"], "per_try_timeout_ms": 2000,
                "budget_min_concurrency": 16}},
   {"name": "narrow", "prefix": "/narrow", "rewrite_prefix": "/v1/slow", "cluster": "narrow"},
   {"name": "pooled", "prefix": "/pooled", "rewrite_prefix": "/v1/slow", "cluster": "pooled"},
   {"name": "flaky", "prefix": "/flaky", "rewrite_prefix": "/v1/hello", "cluster": "flaky"},
   {"name": "failing", "prefix": "/failing", "cluster": "failing",
    "retries": {"attempts": 3, "retry_on": ["5xx"], "budget_percent": 20, "budget_min_concurrency": 1, "backoff_base_ms": 50, "backoff_max_ms": 100}}]}
JSON
stack_proxy gw "$STACK_WORK/gw.json" "$admin" --workers 2
P=http://127.0.0.1:$port
metric() { curl -s "$GW_ADMIN/metrics" | sed -n "s/^$1 //p" | awk '{s += $1} END {print s + 0}'; }

# --- mirroring
got=$(curl -s -H 'Host: orders.test' "$P/mirrored?x=1")
[ "$(echo "$got" | jq -r .service)" = r1 ] || stack_fail "mirrored request: primary's answer expected, got $got"
mirrored() { grep -q '^GET orders.test-shadow /v1/echo?x=1$' "$STACK_WORK/shadow.txt" 2>/dev/null; }
stack_wait 5 mirrored || stack_fail "the shadow got no copy: $(cat "$STACK_WORK/shadow.txt" 2>/dev/null)"
ok "mirroring: the shadow gets a copy with Host orders.test-shadow; the client gets the primary's answer"

# --- faults
got=$(curl -s -D "$STACK_WORK/h" -w ' %{http_code}' "$P/abort")
[[ "$got" == *'"code":"fault_injected"'*' 503' ]] || stack_fail "abort fault: $got"
t0=$(date +%s%N); [ "$(curl -s "$P/delay/d")" = '{"hello":"d"}' ] || stack_fail "delayed request"
ms=$(( ($(date +%s%N) - t0) / 1000000 )); [ "$ms" -ge 300 ] || stack_fail "delay fault took only $ms ms"
ok "fault injection: abort (503 fault_injected) and a 300 ms delay ($ms ms)"

# --- kill -9 of one of three replicas under load: retries and outlier detection leave zero errors
wrk -t1 -c8 -d4s "$P/v1/hello/load" >"$STACK_WORK/wrk.out" 2>&1 &
WRK=$!; STACK_PIDS+=("$WRK")
loaded() { [ "$(metric 'strata_proxy_requests_total{route="three",code_class="2xx"}')" -gt 2000 ]; }
stack_wait 5 loaded || stack_fail "no load"
kill -KILL "$C_PID"
wait "$WRK" || stack_fail "wrk failed"
cat "$STACK_WORK/wrk.out"
grep -q 'Non-2xx or 3xx' "$STACK_WORK/wrk.out" && stack_fail "non-2xx after kill -9 of a replica"
[ "$(metric 'strata_proxy_requests_total{route="three",code_class="5xx"}')" = 0 ] || stack_fail "5xx answered"
ok "kill -9 of one of three replicas under wrk: zero non-2xx ($(metric 'strata_proxy_retries_total{cluster="three"}') retries)"

# --- the circuit breaker opens under overload and closes after
cpids=(); for i in $(seq 8); do curl -s -D "$STACK_WORK/o$i.h" -o "$STACK_WORK/o$i.b" "$P/narrow/400" & cpids+=("$!"); done
wait "${cpids[@]}"
over=$(grep -l '^x-strata-overflow: 1' "$STACK_WORK"/o*.h | wc -l)
okc=$(grep -l '^HTTP/1.1 200' "$STACK_WORK"/o*.h | wc -l)
[ "$over" -ge 1 ] && [ "$okc" -ge 2 ] && [ $((over + okc)) = 8 ] || stack_fail "breaker: $okc ok, $over overflow"
grep -h '"code"' "$STACK_WORK"/o*.b | jq -e 'select(.error.code == "overflow")' >/dev/null || stack_fail "overflow body"
[ "$(curl -s -o /dev/null -w '%{http_code}' "$P/narrow/1")" = 200 ] || stack_fail "the breaker did not close"
ok "circuit breaker: $over of 8 concurrent requests over max_requests 2 got 503 overflow; closed after"

# --- max_connections 2 + max_pending_requests 2: two run, two wait their turn, the rest overflow
rm -f "$STACK_WORK"/o*.h "$STACK_WORK"/o*.b
t0=$(date +%s%N)
cpids=(); for i in $(seq 8); do curl -s -D "$STACK_WORK/o$i.h" -o "$STACK_WORK/o$i.b" "$P/pooled/400" & cpids+=("$!"); done
wait "${cpids[@]}"
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
over=$(grep -l '^x-strata-overflow: 1' "$STACK_WORK"/o*.h | wc -l)
okc=$(grep -l '^HTTP/1.1 200' "$STACK_WORK"/o*.h | wc -l)
# At most 2 + 2 succeed (2 at once, 2 queued); if the 8 did not all arrive
# within the first 400 ms a few more can: what matters is that some waited
# (more than 2 succeeded, so they ran in turns: ≥ 800 ms) and some overflowed.
[ "$okc" -ge 3 ] && [ "$over" -ge 1 ] && [ $((over + okc)) = 8 ] && [ "$ms" -ge 800 ] \
  || stack_fail "max_connections/max_pending_requests: $okc ok, $over overflow in $ms ms"
grep -h '"code"' "$STACK_WORK"/o*.b | jq -e 'select(.error.code == "overflow" and (.error.message | test("max_connections")))' >/dev/null \
  || stack_fail "pending overflow body: $(cat "$STACK_WORK"/o*.b)"
ok "circuit breaker: max_connections 2 + max_pending_requests 2: $okc of 8 served in turns ($ms ms), $over got 503 overflow"

# --- outlier detection ejects the failing endpoint and re-admits it later
codes=""; for i in $(seq 20); do codes+="$(curl -s -o /dev/null -w '%{http_code}' "$P/flaky/o$i") "; done
n500=$(echo "$codes" | tr ' ' '\n' | grep -c 500 || true)
[ "$n500" = 3 ] || stack_fail "expected exactly 3 failures before the ejection, got $n500: $codes"
[ "$(metric 'strata_proxy_outlier_ejected{cluster="flaky"}')" = 1 ] || stack_fail "ejection not exported"
readmitted() { [ "$(curl -s -o /dev/null -w '%{http_code}' "$P/flaky/r")" = 500 ]; }
stack_wait 10 readmitted || stack_fail "the endpoint was never re-admitted"
ok "outlier detection: ejected after 3 consecutive 5xx, re-admitted after the ejection time"

# --- every endpoint fails: retries stop at the budget
before=$(( $(curl -s "http://127.0.0.1:$BAD_PORT/__count") + $(curl -s "http://127.0.0.1:$BAD2_PORT/__count") ))
cpids=(); for i in $(seq 20); do curl -s -o /dev/null "$P/failing/$i" & cpids+=("$!"); done
wait "${cpids[@]}"
after=$(( $(curl -s "http://127.0.0.1:$BAD_PORT/__count") + $(curl -s "http://127.0.0.1:$BAD2_PORT/__count") ))
sent=$((after - before)); refused=$(metric 'strata_proxy_retries_refused_total{cluster="failing",why="budget"}')
[ "$refused" -ge 1 ] || stack_fail "the budget refused no retry"
[ "$sent" -lt 80 ] || stack_fail "retries were not limited: $sent attempts for 20 requests"
ok "retry budget: 20 requests to an all-failing cluster made $sent attempts (not 80); $refused retries refused"
echo "$pass checks passed"
