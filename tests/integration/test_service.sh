#!/usr/bin/env bash
# The service framework end to end, through a real process (strata-demo-service)
# and real clients (curl, promtool, jq): built-in endpoints, routing errors,
# JSON validation errors, request ids, trace propagation between two services,
# Prometheus exposition, JSON logs, graceful shutdown on SIGTERM.
set -euo pipefail
BUILD=${STRATA_BUILD_DIR:?run through ctest}
DEMO=$BUILD/strata-demo-service
work=$(mktemp -d /tmp/strata-test-service.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; for f in "$work"/*.log; do echo "--- $f" >&2; tail -20 "$f" >&2; done; exit 1; }
pass=0
ok() { pass=$((pass + 1)); echo "ok   $*"; }

start() { # name [env...] → sets PORT_<name>, PID_<name>
  local name=$1; shift
  : >"$work/$name.log"
  env "$@" "$DEMO" >>"$work/$name.log" 2>&1 &
  local pid=$!; pids+=("$pid")
  local port=""
  for _ in $(seq 200); do
    port=$(sed -n 's/^port=//p' "$work/$name.log")
    [ -n "$port" ] && curl -fsS -o /dev/null "http://127.0.0.1:$port/healthz" 2>/dev/null && break
    sleep 0.025
  done
  [ -n "$port" ] || fail "$name did not start"
  printf -v "PORT_$name" '%s' "$port"; printf -v "PID_$name" '%s' "$pid"
}

start a READY_FLAG_FILE="$work/not-ready" OTEL_SERVICE_NAME=svc-a LOG_LEVEL=debug SHUTDOWN_DELAY_MS=400
start b OTEL_SERVICE_NAME=svc-b
A=http://127.0.0.1:$PORT_a

# --- built-in endpoints
[ "$(curl -s "$A/healthz")" = '{"status":"ok"}' ] || fail "healthz body"; ok healthz
[ "$(curl -s -o /dev/null -w '%{http_code}' "$A/readyz")" = 200 ] || fail "readyz should be 200"
touch "$work/not-ready"
out=$(curl -s -w ' %{http_code}' "$A/readyz")
[[ "$out" == *'"code":"not_ready"'*'flag file'*' 503' ]] || fail "readyz with failing check: $out"
rm "$work/not-ready"; ok "readyz follows its checks"

# --- routing errors are JSON with a request id
out=$(curl -s -w ' %{http_code}' "$A/nope")
[[ "$out" =~ ^\{\"error\":\{\"code\":\"not_found\",\"message\":\"[^\"]+\",\"request_id\":\"[0-9a-f]{32}\"\}\}\ 404$ ]] || fail "404: $out"
out=$(curl -s -w ' %{http_code}' -X DELETE "$A/healthz")
[[ "$out" == *'"code":"method_not_allowed"'*' 405' ]] || fail "405: $out"; ok "404 and 405 as JSON"

# --- request ids: kept when sane, replaced otherwise, echoed in the response
rid=$(curl -s -D - -o /dev/null -H 'X-Request-Id: abc-123' "$A/v1/hello/x" | tr -d '\r' | sed -n 's/^X-Request-Id: //p')
[ "$rid" = abc-123 ] || fail "request id not kept: $rid"
rid=$(curl -s -D - -o /dev/null -H 'X-Request-Id: bad<id>' "$A/v1/hello/x" | tr -d '\r' | sed -n 's/^X-Request-Id: //p')
[[ "$rid" =~ ^[0-9a-f]{32}$ ]] || fail "insane request id kept: $rid"; ok "request ids"

# --- JSON bodies: 415, 400, 422 with the field named, 201
code() { curl -s -o "$work/body" -w '%{http_code}' "$@"; }
[ "$(code -X POST "$A/v1/items" -d '{"name":"a","qty":1}')" = 415 ] || fail "415"
[ "$(code -X POST "$A/v1/items" -H 'Content-Type: application/json' -d '{"name":')" = 400 ] || fail "400 invalid json"
jq -e '.error.code == "invalid_json"' "$work/body" >/dev/null || fail "invalid_json code: $(cat "$work/body")"
[ "$(code -X POST "$A/v1/items" -H 'Content-Type: application/json' -d '{"name":"a","qty":5000}')" = 422 ] || fail "422 range"
jq -e '.error.message | test("qty")' "$work/body" >/dev/null || fail "422 names the field: $(cat "$work/body")"
[ "$(code -X POST "$A/v1/items" -H 'Content-Type: application/json' -d '{"name":"a","qty":1,"x":1}')" = 422 ] || fail "422 unknown"
jq -e '.error.message | test("x")' "$work/body" >/dev/null || fail "unknown field named: $(cat "$work/body")"
[ "$(code -X POST "$A/v1/items" -H 'Content-Type: application/json; charset=utf-8' -d '{"name":"a","qty":7}')" = 201 ] || fail "201"
jq -e '.qty == 7' "$work/body" >/dev/null || fail "201 body"; ok "JSON validation errors"

# --- trace propagation and request ids across two services
tp=00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01
out=$(curl -s -H "traceparent: $tp" -H 'X-Request-Id: chain-1' "$A/v1/call/$PORT_b")
[ "$out" = '{"hello":"peer"}' ] || fail "call through the client: $out"
for _ in $(seq 100); do grep -q '"request_id":"chain-1"' "$work/b.log" && break; sleep 0.02; done
logs() { grep -v '^port=' "$work/$1.log"; }
logs b | jq -e 'select(.msg=="request" and .request_id=="chain-1") | .trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"' \
  >/dev/null || fail "b did not continue the trace: $(grep chain-1 "$work/b.log")"
logs a | jq -e 'select(.msg=="request" and .request_id=="chain-1" and .route=="/v1/call/{port}") | .trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"' \
  >/dev/null || fail "a did not log the trace id"
ok "traceparent and x-request-id propagate"
[ "$(code "$A/v1/call/1")" = 503 ] || fail "unreachable peer → 503"
jq -e '.error.code == "upstream_unavailable"' "$work/body" >/dev/null || fail "503 body"
[ "$(code "$A/v1/call-named")" = 503 ] || fail "a name without a proxy → 503"
ok "upstream errors as JSON"

# --- HTTP_PROXY: a named peer is reached through the proxy in absolute form
start c OTEL_SERVICE_NAME=svc-c HTTP_PROXY="http://127.0.0.1:$PORT_b" PEER_URL=http://peer-service:9000
out=$(curl -s -H 'X-Request-Id: via-proxy' "http://127.0.0.1:$PORT_c/v1/call-named")
[ "$out" = '{"hello":"peer"}' ] || fail "call through HTTP_PROXY: $out"
for _ in $(seq 100); do grep -q '"request_id":"via-proxy"' "$work/b.log" && break; sleep 0.02; done
logs b | jq -e 'select(.request_id=="via-proxy") | .path == "/v1/hello/peer"' >/dev/null || fail "proxy did not get the call"
ok "HTTP_PROXY carries calls to named services"

# --- Prometheus exposition passes promtool's linter and counts the requests
curl -s "$A/metrics" >"$work/metrics.txt"
promtool check metrics <"$work/metrics.txt" >"$work/promtool.out" 2>&1 || fail "promtool: $(cat "$work/promtool.out")"
[ ! -s "$work/promtool.out" ] || fail "promtool warnings: $(cat "$work/promtool.out")"
grep -q '^strata_http_requests_total{service="svc-a",route="/v1/items",method="POST",code="422"} 2$' "$work/metrics.txt" \
  || fail "request counter: $(grep requests_total "$work/metrics.txt")"
grep -q '^process_resident_memory_bytes ' "$work/metrics.txt" || fail "process metrics"
ok "metrics"

# --- every log line is one JSON object with the stable keys
grep -v '^port=' "$work/a.log" | jq -e -s 'all(.[]; has("ts") and has("level") and has("msg") and .service == "svc-a")' \
  >/dev/null || fail "log lines are not all JSON with ts/level/msg/service"
ok "JSON logs"

# --- graceful shutdown: readiness fails first, the in-flight request finishes, exit 0
curl -s -o "$work/slow.body" -w '%{http_code}' "$A/v1/slow/900" >"$work/slow.code" &
slow=$!
sleep 0.2
kill -TERM "$PID_a"
sleep 0.1
out=$(curl -s -w ' %{http_code}' "$A/readyz")
[[ "$out" == *'"code":"shutting_down"'*' 503' ]] || fail "readyz during shutdown: $out"
wait "$slow"
[ "$(cat "$work/slow.code")" = 200 ] || fail "in-flight request lost: $(cat "$work/slow.code")"
rc=0; for _ in $(seq 400); do kill -0 "$PID_a" 2>/dev/null || break; sleep 0.025; done
kill -0 "$PID_a" 2>/dev/null && fail "the service did not exit within 10 s of SIGTERM"
wait "$PID_a" || rc=$?
[ "$rc" = 0 ] || fail "exit status after SIGTERM: $rc"
curl -s -o /dev/null "$A/healthz" && fail "still accepting after shutdown"
ok "graceful shutdown"
echo "$pass checks passed"
