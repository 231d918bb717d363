#!/usr/bin/env bash
# The sidecar role end to end: real processes, certificates made here.
#   order's sidecar (outbound, the app's HTTP proxy) ──mTLS──▶ user's sidecars (inbound) ──▶ user v1 / v2
# Identity in x-forwarded-client-cert; STRICT refuses plaintext, a foreign
# CA and an expired certificate; PERMISSIVE takes plaintext without an
# identity; the outbound side verifies the destination's SPIFFE ID; the
# authorization matrix (allowed caller, another service, no identity, DENY
# over ALLOW); an 80/20 canary within ±2% over 10,000 requests; a
# blue/green flip under load with zero errors.
set -euo pipefail
source "$STRATA_SOURCE_DIR/tests/integration/lib/stack.sh"
source "$STRATA_SOURCE_DIR/tests/integration/lib/mesh.sh"
stack_init
trap "" PIPE
pass=0
ok() { pass=$((pass + 1)); echo "ok   $*"; }
command -v wrk >/dev/null || stack_fail "wrk is missing"

C=$STACK_WORK/certs E=$STACK_WORK/evil
TD=spiffe://strata.local/ns/default/sa
mesh_ca "$C"; mesh_ca "$E"
for sa in user order report; do mesh_cert "$C" "$sa" "$TD/$sa"; done
mesh_cert "$E" order "$TD/order"                 # the right name from the wrong CA
mesh_expired_cert "$C" stale "$TD/order"

stack_start v1 strata-demo-service OTEL_SERVICE_NAME=user-v1
stack_start v2 strata-demo-service OTEL_SERVICE_NAME=user-v2
stack_start oapp strata-demo-service OTEL_SERVICE_NAME=order READY_FLAG_FILE="$STACK_WORK/order-unready"
i1=$(stack_port); i2=$(stack_port); i3=$(stack_port); out=$(stack_port)
a1=$(stack_port); a2=$(stack_port); a3=$(stack_port); ao=$(stack_port)

inbound() { # ADMIN PORT APP_PORT MODE
cat <<JSON
{"version": "user-sidecar", "admin": {"address": "127.0.0.1:$1"},
 "identity": {"workload": "user", "spiffe_id": "$TD/user"},
 "listeners": [{"name": "inbound", "address": "127.0.0.1:$2", "role": "inbound",
                "tls": {"certificates": [{"cert_file": "$C/user.pem", "key_file": "$C/user.key"}]},
                "mtls": {"mode": "$4", "ca_file": "$C/ca.pem"}}],
 "clusters": [{"name": "app", "endpoints": ["127.0.0.1:$3"]}],
 "authorization": [
   {"name": "allow-order", "action": "ALLOW", "rules": [{"from": [{"principals": ["strata.local/ns/default/sa/order"]}]}]},
   {"name": "health", "action": "ALLOW", "rules": [{"to": [{"paths": ["/healthz", "/readyz"]}]}]},
   {"name": "deny-blocked", "action": "DENY", "rules": [{"to": [{"paths": ["/v1/hello/blocked"]}]}]}],
 "routes": [{"name": "app", "prefix": "/", "cluster": "app"}]}
JSON
}
outbound() { # W1 W2
cat <<JSON
{"version": "order-$1-$2", "admin": {"address": "127.0.0.1:$ao"},
 "app": {"ready_url": "http://127.0.0.1:$OAPP_PORT/readyz", "exit_wait_ms": 10000},
 "identity": {"workload": "order", "spiffe_id": "$TD/order"},
 "listeners": [{"name": "outbound", "address": "127.0.0.1:$out", "role": "outbound"}],
 "clusters": [{"name": "user", "lb": "round_robin",
               "endpoints": [{"address": "127.0.0.1:$i1", "labels": {"version": "v1"}},
                             {"address": "127.0.0.1:$i2", "labels": {"version": "v2"}}],
               "subsets": [{"name": "v1", "labels": {"version": "v1"}}, {"name": "v2", "labels": {"version": "v2"}}],
               "health_check": {"path": "/readyz", "interval_ms": 200},
               "tls": {"cert_file": "$C/order.pem", "key_file": "$C/order.key", "ca_file": "$C/ca.pem",
                       "spiffe_id": "$TD/user"}},
              {"name": "imposter", "endpoints": ["127.0.0.1:$i1"],
               "tls": {"cert_file": "$C/order.pem", "key_file": "$C/order.key", "ca_file": "$C/ca.pem",
                       "spiffe_id": "$TD/payments"}}],
 "routes": [{"name": "payments", "host": "payments", "prefix": "/", "cluster": "imposter"},
            {"name": "user", "host": "user", "prefix": "/",
             "destinations": [{"cluster": "user", "subset": "v1", "weight": $1}, {"cluster": "user", "subset": "v2", "weight": $2}]}]}
JSON
}
inbound "$a1" "$i1" "$V1_PORT" STRICT >"$STACK_WORK/u1.json"
inbound "$a2" "$i2" "$V2_PORT" STRICT >"$STACK_WORK/u2.json"
inbound "$a3" "$i3" "$V1_PORT" PERMISSIVE >"$STACK_WORK/u3.json"
outbound 80 20 >"$STACK_WORK/order.json"
stack_proxy u1 "$STACK_WORK/u1.json" "$a1" --workers 1
stack_proxy u2 "$STACK_WORK/u2.json" "$a2" --workers 1
stack_proxy u3 "$STACK_WORK/u3.json" "$a3" --workers 1
stack_proxy order "$STACK_WORK/order.json" "$ao" --workers 2
X="-x http://127.0.0.1:$out"

# --- the app's request through both sidecars: identity reaches the destination app
got=$(curl -s $X http://user/v1/echo)
echo "$got" | jq -e --arg by "$TD/user" --arg uri "$TD/order" \
  '.headers["x-forwarded-client-cert"] == "By=\($by);URI=\($uri)" and (.service | startswith("user-v"))' >/dev/null \
  || stack_fail "mesh hop: $got"
got=$(curl -s -H 'Host: user' "http://127.0.0.1:$out/v1/echo")   # plain request naming the service
echo "$got" | jq -e '.service | startswith("user-v")' >/dev/null || stack_fail "Host-named request: $got"
got=$(curl -s $X -H 'x-forwarded-client-cert: URI=spiffe://forged' http://user/v1/echo | jq -r '.headers["x-forwarded-client-cert"]')
[ "$got" = "By=$TD/user;URI=$TD/order" ] || stack_fail "a forged XFCC passed: $got"
checked() { [ "$(curl -s "http://127.0.0.1:$a1/metrics" | grep -c '^strata_proxy_requests_total{route="app",code_class="2xx"}')" = 1 ] &&
            curl -s "$ORDER_ADMIN/config" | jq -e '[.endpoints[] | select(.cluster == "user") | .healthy] == [true, true]' >/dev/null; }
stack_wait 5 checked || stack_fail "health checks over mTLS: $(curl -s "$ORDER_ADMIN/config")"
st=$(curl -s -o /dev/null -w '%{http_connect}' -p $X http://user/v1/echo || true)
[ "$st" = 405 ] || stack_fail "CONNECT: $st"
ok "app → outbound sidecar → mTLS → inbound sidecar → app; x-forwarded-client-cert carries the verified SPIFFE ID; health checks over mTLS; CONNECT → 405 connect_not_supported"

# --- STRICT refuses plaintext, a foreign CA, an expired certificate and no certificate
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$i1/v1/hello/x" || true)
[ "$code" = 000 ] || stack_fail "STRICT answered plaintext: $code"
tlscode() { curl -s -k -o /dev/null -w '%{http_code}' "$@" "https://127.0.0.1:$i1/v1/hello/x" || true; }
[ "$(tlscode --cert "$E/order.pem" --key "$E/order.key")" = 000 ] || stack_fail "a certificate from another CA was accepted"
[ "$(tlscode --cert "$C/stale.pem" --key "$C/stale.key")" = 000 ] || stack_fail "an expired certificate was accepted"
[ "$(tlscode)" = 000 ] || stack_fail "no client certificate was accepted"
[ "$(tlscode --cert "$C/order.pem" --key "$C/order.key")" = 200 ] || stack_fail "the right certificate was refused"
curl -s "http://127.0.0.1:$a1/metrics" | grep -Eq '^strata_proxy_tls_handshake_failures_total [1-9]' || stack_fail "handshake failures not counted"
ok "STRICT: plaintext, foreign CA, expired and missing client certificates refused"

# --- the outbound side verifies the destination's identity
got=$(curl -s -w ' %{http_code}' $X http://payments/v1/hello/x)
[[ "$got" == *'"code":"mtls_peer_untrusted"'*' 503' ]] || stack_fail "a destination with the wrong identity: $got"
ok "outbound mTLS refuses a destination that is not the expected SPIFFE ID (503 mtls_peer_untrusted)"

# --- authorization matrix
st() { curl -s -k -o "$STACK_WORK/b" -w '%{http_code}' "$@" || true; }
[ "$(st --cert "$C/report.pem" --key "$C/report.key" "https://127.0.0.1:$i1/v1/hello/x")" = 403 ] || stack_fail "another service allowed"
jq -e '.error.code == "rbac_denied" and (.error.message | test("no ALLOW policy"))' "$STACK_WORK/b" >/dev/null || stack_fail "403 body: $(cat "$STACK_WORK/b")"
got=$(curl -s -w ' %{http_code}' $X http://user/v1/hello/blocked)
[[ "$got" == *'"code":"rbac_denied"'*'deny-blocked'*' 403' ]] || stack_fail "DENY over ALLOW: $got"
for evasion in //v1/hello/blocked /v1/x/../hello/blocked /v1/hello/%62locked /v1/./hello//blocked; do
  got=$(curl -s --path-as-is -w ' %{http_code}' $X "http://user$evasion")
  [[ "$got" == *'"code":"rbac_denied"'*' 403' ]] || stack_fail "DENY bypassed with $evasion: $got"
done
[ "$(st "http://127.0.0.1:$i3/v1/hello/x")" = 403 ] || stack_fail "PERMISSIVE: no identity must not pass an ALLOW on principals"
[ "$(st "http://127.0.0.1:$i3/readyz")" = 200 ] || stack_fail "PERMISSIVE: plaintext to an allowed path"
[ "$(st --cert "$C/order.pem" --key "$C/order.key" "https://127.0.0.1:$i3/v1/hello/x")" = 200 ] || stack_fail "PERMISSIVE: mTLS"
denied=$( (curl -s "http://127.0.0.1:$a1/metrics"; curl -s "http://127.0.0.1:$a2/metrics") |
  sed -n 's/^strata_proxy_rbac_denied_total{policy="deny-blocked"} //p' | awk '{s += $1} END {print s + 0}')
[ "$denied" = 5 ] || stack_fail "rbac metric: $denied"
ok "authorization: allowed caller, another service (403), no identity (403), DENY over ALLOW (also through //, .., %-escapes), PERMISSIVE plaintext"

# --- canary: 80/20 within ±2% over 10,000 requests
urls=(); for i in $(seq 10000); do urls+=("http://user/v1/echo?i=$i"); done
curl -s $X "${urls[@]}" | jq -r .service >"$STACK_WORK/split"
n1=$(grep -c user-v1 "$STACK_WORK/split" || true); n2=$(grep -c user-v2 "$STACK_WORK/split" || true)
[ $((n1 + n2)) = 10000 ] || stack_fail "canary answers: $n1 + $n2"
[ "$n2" -ge 1800 ] && [ "$n2" -le 2200 ] || stack_fail "canary split $n1/$n2, expected 8000/2000 ± 200"
ok "canary 80/20 over 10,000 requests: $n1/$n2"

# --- blue/green: 100/0 flipped to 0/100 under load, zero errors
outbound 100 0 >"$STACK_WORK/order.json"
curl -sf -X POST "$ORDER_ADMIN/reload" >/dev/null || stack_fail "reload to 100/0"
[ "$(curl -s $X http://user/v1/echo | jq -r .service)" = user-v1 ] || stack_fail "blue"
wrk -t1 -c16 -d4s -H 'Host: user' "http://127.0.0.1:$out/v1/hello/bg" >"$STACK_WORK/wrk.out" 2>&1 &
WRK=$!; STACK_PIDS+=("$WRK")
busy() { curl -s "$ORDER_ADMIN/metrics" | grep -Eq '^strata_proxy_requests_total\{route="user",code_class="2xx"\} [0-9]{5,}'; }
stack_wait 5 busy || true
outbound 0 100 >"$STACK_WORK/order.json"
curl -sf -X POST "$ORDER_ADMIN/reload" >/dev/null || stack_fail "flip to 0/100"
wait "$WRK" || stack_fail "wrk failed"
cat "$STACK_WORK/wrk.out"
grep -q 'Non-2xx or 3xx' "$STACK_WORK/wrk.out" && stack_fail "errors during the flip"
grep -q 'Socket errors' "$STACK_WORK/wrk.out" && stack_fail "socket errors during the flip"
for i in $(seq 20); do
  [ "$(curl -s $X http://user/v1/echo | jq -r .service)" = user-v2 ] || stack_fail "green: request $i not on v2"
done
ok "blue/green flip under load: zero non-2xx, zero socket errors, then all on v2"
# --- metrics by source and destination workload, both sides
m=$(curl -s "$ORDER_ADMIN/metrics")
echo "$m" | grep -Eq '^strata_mesh_requests_total\{source_workload="order",destination_workload="user",direction="outbound",code_class="2xx"\} [0-9]+' \
  || stack_fail "outbound mesh metrics"
m=$(curl -s "http://127.0.0.1:$a2/metrics")
echo "$m" | grep -Eq '^strata_mesh_requests_total\{source_workload="order",destination_workload="user",direction="inbound",code_class="2xx"\} [0-9]+' \
  || stack_fail "inbound mesh metrics"
echo "$m" | grep -q '^strata_mesh_request_duration_seconds_bucket{source_workload="order"' || stack_fail "mesh durations"
ok "metrics with source and destination workloads on both sides"

# --- certificate rotation under load: new workload certificates on every sidecar, zero errors
serial() { openssl s_client -connect "127.0.0.1:$i2" -cert "$C/order.pem" -key "$C/order.key" </dev/null 2>/dev/null |
           openssl x509 -noout -serial 2>/dev/null; }
old=$(serial); [ -n "$old" ] || stack_fail "no serial"
wrk -t1 -c8 -d4s -H 'Host: user' "http://127.0.0.1:$out/v1/hello/rot" >"$STACK_WORK/wrk2.out" 2>&1 &
WRK=$!; STACK_PIDS+=("$WRK")
stack_wait 5 busy || true
mesh_cert "$C" user "$TD/user"; mesh_cert "$C" order "$TD/order"
kill -HUP "$U1_PID" "$U2_PID" "$ORDER_PID"
rotated() { [ "$(serial)" != "$old" ]; }
stack_wait 5 rotated || stack_fail "the inbound certificate was not rotated"
wait "$WRK" || stack_fail "wrk failed"
cat "$STACK_WORK/wrk2.out"
grep -q 'Non-2xx or 3xx' "$STACK_WORK/wrk2.out" && stack_fail "errors during certificate rotation"
grep -q 'Socket errors' "$STACK_WORK/wrk2.out" && stack_fail "socket errors during certificate rotation"
[ "$(curl -s $X http://user/v1/echo | jq -r .service)" = user-v2 ] || stack_fail "mesh after rotation"
ok "certificate rotation (SIGHUP) under load: zero non-2xx, zero socket errors"

# --- lifecycle: readiness follows the app; on SIGTERM outbound serves until the app has exited
[ "$(curl -s -o /dev/null -w '%{http_code}' "$ORDER_ADMIN/readyz")" = 200 ] || stack_fail "sidecar ready with its app"
touch "$STACK_WORK/order-unready"
[ "$(curl -s "$ORDER_ADMIN/readyz" | jq -r .status)" = app_not_ready ] || stack_fail "readiness must follow the app"
rm "$STACK_WORK/order-unready"
[ "$(curl -s -o /dev/null -w '%{http_code}' "$ORDER_ADMIN/readyz")" = 200 ] || stack_fail "ready again with the app"
kill -TERM "$ORDER_PID"
for i in 1 2 3; do   # the app is still up: its calls through the sidecar keep working
  [ "$(curl -s $X http://user/v1/echo | jq -r .service)" = user-v2 ] || stack_fail "outbound stopped before the app exited"
done
[ "$(curl -s "$ORDER_ADMIN/readyz" | jq -r .status)" = draining ] || stack_fail "readiness during the drain"
stack_stop oapp
for _ in $(seq 200); do kill -0 "$ORDER_PID" 2>/dev/null || break; sleep 0.05; done
kill -0 "$ORDER_PID" 2>/dev/null && stack_fail "the sidecar did not exit after its app"
rc=0; wait "$ORDER_PID" || rc=$?; [ "$rc" = 0 ] || stack_fail "sidecar exit status $rc"
grep -q 'the app has exited: draining outbound' "$STACK_WORK/order.log" || stack_fail "drain order not logged"
ok "lifecycle: readiness follows the app; after SIGTERM the outbound side serves until the app exits, then drains and exits 0"
echo "$pass checks passed"
