#!/usr/bin/env bash
# The gateway under load (wrk, bounded to a few seconds): config reloads by
# SIGHUP and by the admin API, then a rolling replacement — a second
# gateway joins the port (SO_REUSEPORT) and the first gets SIGTERM — must
# cost zero non-2xx responses and zero socket errors.
set -euo pipefail
source "$STRATA_SOURCE_DIR/tests/integration/lib/stack.sh"
stack_init
pass=0
ok() { pass=$((pass + 1)); echo "ok   $*"; }
command -v wrk >/dev/null || stack_fail "wrk is missing (scripts/install-deps)"

stack_start a strata-demo-service OTEL_SERVICE_NAME=backend-a
stack_start b strata-demo-service OTEL_SERVICE_NAME=backend-b
port=$(stack_port); admin1=$(stack_port); admin2=$(stack_port)
config() { # ADMIN VERSION
cat <<JSON
{"version": "$2", "admin": {"address": "127.0.0.1:$1"},
 "listeners": [{"name": "http", "address": "127.0.0.1:$port"}],
 "clusters": [{"name": "demo", "endpoints": ["127.0.0.1:$A_PORT", "127.0.0.1:$B_PORT"], "lb": "least_request"}],
 "routes": [{"name": "hello", "prefix": "/v1/hello", "cluster": "demo"}]}
JSON
}
config "$admin1" v1 >"$STACK_WORK/gw1.json"
config "$admin2" v1 >"$STACK_WORK/gw2.json"
stack_proxy gw1 "$STACK_WORK/gw1.json" "$admin1" --workers 2

wrk -t2 -c32 -d6s "http://127.0.0.1:$port/v1/hello/load" >"$STACK_WORK/wrk.out" 2>&1 &
WRK=$!; STACK_PIDS+=("$WRK")
running() { curl -s "$GW1_ADMIN/metrics" | grep -Eq '^strata_proxy_requests_total\{route="hello",code_class="2xx"\} [0-9]{3,}'; }
stack_wait 5 running || stack_fail "no load arrived"

# reloads under load: SIGHUP, then the admin API
config "$admin1" v2 >"$STACK_WORK/gw1.json"
kill -HUP "$GW1_PID"
v2() { [ "$(curl -s "$GW1_ADMIN/config" | jq -r .version)" = v2 ]; }
stack_wait 5 v2 || stack_fail "SIGHUP reload under load"
config "$admin1" v3 >"$STACK_WORK/gw1.json"
[ "$(curl -s -X POST "$GW1_ADMIN/reload" | jq -r .version)" = v3 ] || stack_fail "API reload under load"

# more load on the reloaded config, then the rolling replacement: the
# successor joins the port, the old one drains
served() { curl -s "$1/metrics" | sed -n 's/^strata_proxy_requests_total{route="hello",code_class="2xx"} //p'; }
base=$(served "$GW1_ADMIN")
more() { [ "$(served "$GW1_ADMIN")" -gt $((base + 5000)) ]; }
stack_wait 5 more || stack_fail "load stalled after the reloads"

stack_proxy gw2 "$STACK_WORK/gw2.json" "$admin2" --workers 2
kill -TERM "$GW1_PID"
for _ in $(seq 200); do kill -0 "$GW1_PID" 2>/dev/null || break; sleep 0.05; done
kill -0 "$GW1_PID" 2>/dev/null && stack_fail "the old gateway did not exit within 10 s of SIGTERM"
rc=0; wait "$GW1_PID" || rc=$?
[ "$rc" = 0 ] || stack_fail "old gateway exit status $rc"
rc=0; wait "$WRK" || rc=$?
cat "$STACK_WORK/wrk.out"
[ "$rc" = 0 ] || stack_fail "wrk failed"
grep -q 'Non-2xx or 3xx responses' "$STACK_WORK/wrk.out" && stack_fail "non-2xx responses during reloads and replacement"
grep -q 'Socket errors' "$STACK_WORK/wrk.out" && stack_fail "socket errors during reloads and replacement"
total=$(awk '/requests in/ {print $1}' "$STACK_WORK/wrk.out")
[ "${total:-0}" -gt 1000 ] || stack_fail "too few requests: $total"
served2=$(served "$GW2_ADMIN")
[ "${served2:-0}" -gt 0 ] || stack_fail "the successor served nothing"
ok "$total requests through 2 reloads and a rolling replacement (successor served $served2): zero non-2xx, zero socket errors"
echo "$pass checks passed"
