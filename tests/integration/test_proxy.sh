#!/usr/bin/env bash
# strata-proxy end to end with real processes and curl: routing by host,
# path and method; round robin over two backends; prefix rewrite; query
# strings and bodies; X-Forwarded-*, X-Request-Id, traceparent; JSON errors
# with reason codes for no route (404), a dead cluster (503) and a slow
# upstream (504); config errors that name the field; graceful stop.
set -euo pipefail
source "$STRATA_SOURCE_DIR/tests/integration/lib/stack.sh"
stack_init
pass=0
ok() { pass=$((pass + 1)); echo "ok   $*"; }

stack_start a strata-demo-service OTEL_SERVICE_NAME=backend-a
stack_start b strata-demo-service OTEL_SERVICE_NAME=backend-b
dead=$(stack_port)   # nothing listens here
port=$(stack_port); tport=$(stack_port)
mkcert() { # DIR: a self-signed ECDSA certificate for localhost (a new serial each time)
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=localhost \
    -addext subjectAltName=DNS:localhost -keyout "$1/key.pem" -out "$1/cert.pem" 2>/dev/null || stack_fail "openssl req"
}
mkdir -p "$STACK_WORK/tls" "$STACK_WORK/tls2"
mkcert "$STACK_WORK/tls"
cat >"$STACK_WORK/proxy.json" <<JSON
{"listeners": [{"name": "http", "address": "127.0.0.1:$port"},
               {"name": "https", "address": "127.0.0.1:$tport",
                "tls": {"certificates": [{"cert_file": "$STACK_WORK/tls/cert.pem", "key_file": "$STACK_WORK/tls/key.pem"}]}}],
 "clusters": [{"name": "demo", "endpoints": ["127.0.0.1:$A_PORT", "127.0.0.1:$B_PORT"]},
              {"name": "dead", "endpoints": ["127.0.0.1:$dead"]}],
 "routes": [{"name": "dead", "prefix": "/dead", "cluster": "dead"},
            {"name": "slow", "prefix": "/v1/slow", "cluster": "demo", "timeout_ms": 300},
            {"name": "api-host", "host": "*.api.test", "prefix": "/hello", "rewrite_prefix": "/v1/hello", "cluster": "demo"},
            {"name": "items", "exact": "/v1/items", "methods": ["POST"], "cluster": "demo"},
            {"name": "hello", "prefix": "/v1/hello", "methods": ["GET", "HEAD"], "cluster": "demo"}]}
JSON
: >"$STACK_WORK/proxy.log"
"$STRATA_BUILD_DIR/strata-proxy" --config "$STACK_WORK/proxy.json" --workers 2 >>"$STACK_WORK/proxy.log" 2>&1 &
PROXY_PID=$!; STACK_PIDS+=("$PROXY_PID")
P=http://127.0.0.1:$port
for _ in $(seq 200); do curl -s -o /dev/null "$P/" && break; sleep 0.025; done

# --- routing and round robin
for i in $(seq 10); do
  [ "$(curl -s "$P/v1/hello/rr$i")" = "{\"hello\":\"rr$i\"}" ] || stack_fail "hello through the proxy"
done
na=$(stack_logs a | jq -r 'select(.msg=="request" and (.path|startswith("/v1/hello/rr"))) | .path' | wc -l)
nb=$(stack_logs b | jq -r 'select(.msg=="request" and (.path|startswith("/v1/hello/rr"))) | .path' | wc -l)
[ "$na" -ge 4 ] && [ "$nb" -ge 4 ] && [ $((na + nb)) -eq 10 ] || stack_fail "round robin: a=$na b=$nb"
ok "routes to the cluster, round robin ($na/$nb)"

# --- host wildcard + prefix rewrite; method match; body and status pass through
[ "$(curl -s -H 'Host: eu.api.test' "$P/hello/x")" = '{"hello":"x"}' ] || stack_fail "host + rewrite"
[ "$(curl -s -o /dev/null -w '%{http_code}' -H 'Host: api.test' "$P/hello/x")" = 404 ] || stack_fail "*.api.test must not match api.test"
out=$(curl -s -w ' %{http_code}' -X POST "$P/v1/items" -H 'Content-Type: application/json' -d '{"name":"n","qty":3}')
[ "$out" = '{"name":"n","qty":3} 201' ] || stack_fail "POST body through the proxy: $out"
out=$(curl -s -w ' %{http_code}' -X POST "$P/v1/items" -H 'Content-Type: application/json' -d '{"qty":0}')
[[ "$out" == *'"code":"validation_failed"'*' 422' ]] || stack_fail "upstream 422 passes through: $out"
[ "$(curl -s -o /dev/null -w '%{http_code}' -X DELETE "$P/v1/hello/x")" = 404 ] || stack_fail "method match"
ok "host wildcard, rewrite, methods, bodies, upstream statuses"

# --- forwarded headers, request id and trace context reach the upstream
tp=00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01
hdrs=$(curl -s -D - -o /dev/null -H "traceparent: $tp" -H 'X-Request-Id: px-1' -H 'X-Forwarded-For: 203.0.113.9' "$P/v1/hello/t")
echo "$hdrs" | tr -d '\r' | grep -q '^X-Request-Id: px-1$' || stack_fail "request id echoed by the upstream"
for _ in $(seq 100); do stack_logs a | grep -q '"px-1"' && break; stack_logs b | grep -q '"px-1"' && break; sleep 0.02; done
line=$( (stack_logs a; stack_logs b) | jq -c 'select(.request_id=="px-1")')
echo "$line" | jq -e '.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"' >/dev/null || stack_fail "trace not continued: $line"
ok "X-Request-Id and traceparent continue upstream"

# --- errors: JSON with a reason code, and the header
out=$(curl -s -D "$STACK_WORK/h" "$P/nothing/here")
echo "$out" | jq -e '.error.code == "route_not_found" and (.error.request_id | length) == 32' >/dev/null || stack_fail "404: $out"
grep -qi '^x-strata-reason: route_not_found' "$STACK_WORK/h" || stack_fail "x-strata-reason"
out=$(curl -s -w ' %{http_code}' "$P/dead/x")
[[ "$out" == *'"code":"upstream_connect_failed"'*' 503' ]] || stack_fail "dead cluster: $out"
start=$(date +%s%N)
out=$(curl -s -w ' %{http_code}' "$P/v1/slow/2000")
ms=$(( ($(date +%s%N) - start) / 1000000 ))
[[ "$out" == *'"code":"upstream_timeout"'*' 504' ]] || stack_fail "slow upstream: $out"
[ "$ms" -lt 1500 ] || stack_fail "the 300 ms route timeout took $ms ms"
ok "404 / 503 / 504 as JSON with reason codes"

# --- TLS listener: HTTPS through the same routes; certificates reload on SIGHUP
tls_curl() { curl -s --max-time 5 --cacert "$1" --resolve "localhost:$tport:127.0.0.1" "${@:2}"; }
[ "$(tls_curl "$STACK_WORK/tls/cert.pem" "https://localhost:$tport/v1/hello/tls")" = '{"hello":"tls"}' ] \
  || stack_fail "HTTPS through the proxy"
serial() { openssl s_client -connect "127.0.0.1:$tport" -servername localhost </dev/null 2>/dev/null | openssl x509 -noout -serial; }
old=$(serial); [ -n "$old" ] || stack_fail "no certificate served"
cp "$STACK_WORK/tls/cert.pem" "$STACK_WORK/tls2/old.pem"
mkcert "$STACK_WORK/tls"
kill -HUP "$PROXY_PID"
for _ in $(seq 100); do [ "$(serial)" != "$old" ] && break; sleep 0.05; done
[ "$(serial)" != "$old" ] || stack_fail "certificate not reloaded on SIGHUP"
[ "$(tls_curl "$STACK_WORK/tls/cert.pem" "https://localhost:$tport/v1/hello/new")" = '{"hello":"new"}' ] || stack_fail "HTTPS after reload"
new=$(serial)
echo garbage >"$STACK_WORK/tls/cert.pem"
kill -HUP "$PROXY_PID"
for _ in $(seq 100); do grep -q "certificate reload failed" "$STACK_WORK/proxy.log" && break; sleep 0.05; done
grep -q "certificate reload failed" "$STACK_WORK/proxy.log" || stack_fail "a bad reload is not reported"
[ "$(serial)" = "$new" ] || stack_fail "a bad reload replaced the working certificate"
ok "TLS listener; SIGHUP reloads certificates, a bad file keeps the old ones"

# --- config errors name the field; nothing starts
echo '{"listeners":[{"name":"h","address":"127.0.0.1:0"}],"clusters":[{"name":"c","endpoints":["127.0.0.1:1"]}],"routes":[{"name":"r","prefix":"/","cluster":"nope"}]}' >"$STACK_WORK/bad.json"
if msg=$("$STRATA_BUILD_DIR/strata-proxy" --config "$STACK_WORK/bad.json" 2>&1); then stack_fail "bad config accepted"; fi
[[ "$msg" == *'$.routes[0]: cluster: no cluster named "nope"'* ]] || stack_fail "config error message: $msg"
ok "config errors name the field"

# --- graceful stop
kill -TERM "$PROXY_PID"
rc=0; for _ in $(seq 400); do kill -0 "$PROXY_PID" 2>/dev/null || break; sleep 0.025; done
kill -0 "$PROXY_PID" 2>/dev/null && stack_fail "the proxy did not exit within 10 s of SIGTERM"
wait "$PROXY_PID" || rc=$?
[ "$rc" = 0 ] || stack_fail "proxy exit status $rc"
ok "SIGTERM drains and exits 0"
echo "$pass checks passed"
