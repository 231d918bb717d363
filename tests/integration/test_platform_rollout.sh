#!/usr/bin/env bash
# Rolling updates and the HPA on the whole platform (`strata up` on copies
# of deploy/, in temp state directories on free ports), under load through
# the gateway over TLS:
#  1. order-svc-v1's template changes (`strata apply`) and order-svc-v2 is
#     restarted (`strata rollout restart`) while wrk sends GET /v1/orders
#     at a steady pace: zero non-2xx, zero socket errors, every pod on the
#     new revision; `strata rollout undo` goes back to the first revision,
#     with the same zero-error property;
#  2. the HPA of order-svc-v1 (CPU request 20m, scale-down window 5 s,
#     --hpa-interval-ms 1000) scales up above 2 under load (ScaledUp) and
#     back down to 2 once the load stops (ScaledDown);
#  3. `strata down` leaves no process behind, after each of the two.
# Every wait is a poll with a deadline; every load is bounded in time and
# count; all traffic goes to 127.0.0.1.
set -euo pipefail
: "${STRATA_BUILD_DIR:?run through ctest (make test)}"
: "${STRATA_SOURCE_DIR:?run through ctest (make test)}"
source "$STRATA_SOURCE_DIR/tests/integration/lib/platform.sh"
trap "" PIPE
B=$STRATA_BUILD_DIR
LUA=$STRATA_SOURCE_DIR/tests/integration/platform-rollout/orders.lua
S=$(mktemp -d /tmp/strata-rollout.XXXXXX)
chmod 0711 "$S" # PostgreSQL runs as its own user and must reach STATE/data
STATES=()
WRK=
pass=0
ok() { pass=$((pass + 1)); echo "ok   $*"; }
fail() { echo "FAIL: $*" >&2; exit 1; }
port() { "$B/strata-test-freeport"; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }
utc_ms() { date -u +%Y-%m-%dT%H:%M:%S.%3NZ; }

# Every process whose command line or working directory names state
# directory $1 is ours (replicas run in STATE/pods/<replica>, servers keep
# their data in STATE/data).
ours() { platform_pids "$1"; }

cleanup() {
  local rc=$? st left f
  trap - EXIT
  if [ -n "$WRK" ]; then kill -TERM "$WRK" 2>/dev/null || true; fi # timeout passes it on to wrk
  for st in "${STATES[@]}"; do
    if [ -f "$st/control.json" ]; then "$B/strata" down --state "$st" --timeout 60 >/dev/null 2>&1 || true; fi
    left=$(ours "$st")
    if [ -n "$left" ]; then
      echo "cleanup: killing leftovers: $left" >&2
      kill -KILL $left 2>/dev/null || true
    fi
    if [ "$rc" != 0 ]; then
      echo "--- $st/control.log (last 40 lines)" >&2; tail -40 "$st/control.log" >&2 2>/dev/null || true
      for f in "$st"/logs/*/*.log; do
        [ -f "$f" ] && { echo "--- $f (last 8 lines)" >&2; tail -8 "$f" >&2; }
      done
    fi
  done
  [ -n "${STRATA_KEEP:-}" ] && echo "kept $S" >&2 || rm -rf "$S"
  exit "$rc"
}
trap cleanup EXIT

command -v wrk >/dev/null || fail "wrk is missing (scripts/install-deps)"
[ -f "$LUA" ] || fail "no $LUA"

# up NAME MANIFESTS [FLAGS...]: a platform in $S/NAME on free ports; sets
# STATE, HTTPS, CA.
up() {
  local name=$1 dir=$2
  shift 2
  STATE=$S/$name
  STATES+=("$STATE")
  local admin http
  admin=$(port) http=$(port) HTTPS=$(port)
  local t0; t0=$(now_ms)
  "$B/strata" up -f "$dir" --state "$STATE" --admin "127.0.0.1:$admin" \
    --gateway-http "127.0.0.1:$http" --gateway-https "127.0.0.1:$HTTPS" \
    --prometheus-port 0 --alertmanager-port 0 --backoff-base-ms 500 --timeout 150 "$@" >"$S/$name.up.out" 2>&1 \
    || { cat "$S/$name.up.out"; fail "strata up ($name)"; }
  CA=$(jq -r .ca_file "$STATE/control.json")
  [ -s "$CA" ] || fail "no CA certificate at $CA"
  echo "note: strata up ($name) took $(($(now_ms) - t0)) ms"
}
strata() { "$B/strata" "$@" --state "$STATE"; }
c() { curl -sS --max-time 15 --cacert "$CA" --resolve "localhost:$HTTPS:127.0.0.1" "$@"; }

# user N: registers and logs in user N through the gateway; prints the token.
user() {
  local email="rollout-$$-$1@example.com" code
  code=$(c -o "$S/reg" -w '%{http_code}' -X POST "https://localhost:$HTTPS/v1/users" \
    -H 'Content-Type: application/json' \
    --data-binary "{\"email\":\"$email\",\"password\":\"correct horse battery\",\"name\":\"Load $1\"}")
  [ "$code" = 201 ] || fail "register: $code $(cat "$S/reg")"
  code=$(c -o "$S/login" -w '%{http_code}' -X POST "https://localhost:$HTTPS/v1/auth/login" \
    -H 'Content-Type: application/json' --data-binary "{\"email\":\"$email\",\"password\":\"correct horse battery\"}")
  [ "$code" = 200 ] || fail "login: $code $(cat "$S/login")"
  jq -re .access_token "$S/login" || fail "no access token: $(cat "$S/login")"
}

status_json() { strata status --output json >"$S/status.json" || fail "strata status"; }
# w NAME JQ: evaluates JQ on workload NAME of the last status_json.
w() { jq -r --arg n "$1" ".workloads[] | select(.name == \$n) | $2" "$S/status.json"; }

# load OUT TOKENS DELAY_MS CONNS MAX_S MAX_REQ: wrk in the background, paced
# and bounded (its own -d, a per-thread response count, and a timeout).
load() {
  WRK_TOKENS=$2 WRK_DELAY_MS=$3 WRK_MAX=$6 timeout $(($5 + 30)) \
    wrk -t1 -c"$4" -d"$5"s --timeout 10s -s "$LUA" "https://127.0.0.1:$HTTPS/v1/orders" >"$1" 2>&1 &
  WRK=$!
}
# load_stop OUT: SIGINT (wrk then prints its summary), wait, check zero errors;
# sets SERVED to the number of responses.
load_stop() {
  kill -INT "$WRK" 2>/dev/null || true
  local rc=0
  wait "$WRK" || rc=$?
  WRK=
  cat "$1"
  [ "$rc" = 0 ] || fail "wrk exited with $rc"
  ! grep -q 'Non-2xx or 3xx responses' "$1" || fail "non-2xx responses: $(grep 'status codes' "$1")"
  ! grep -q 'Socket errors' "$1" || fail "socket errors: $(grep 'Socket errors' "$1")"
  SERVED=$(awk '/requests in/ {print $1}' "$1")
  grep -Eq "^status codes: 200=$SERVED$" "$1" || fail "not all 200: $(grep 'status codes' "$1")"
}

# gateway_orders FROM TO: GET /v1/orders the gateways answered between two
# UTC timestamps (their access logs); prints "N statuses=... retried=R".
gateway_orders() {
  cat "$STATE"/logs/gateway-*/proxy.log | jq -Rr --arg a "$1" --arg b "$2" \
    'fromjson? | select(.path == "/v1/orders" and .ts >= $a and .ts <= $b) | [.status, .attempts] | @tsv' |
    awk '{n++; s[$1]++; if ($2 > 1) r++} END {printf "%d statuses=", n; for (k in s) printf "%s:%d,", k, s[k]; printf " retried=%d\n", r}'
}

# versions_settled NAME VERSION: every pod of NAME (terminating ones
# included) runs VERSION, and there are exactly `replicas` of them.
versions_settled() {
  status_json
  [ "$(w "$1" '[.pods[].version] | unique | join(",")')" = "$2" ] &&
    [ "$(w "$1" '(.pods | length) == .replicas and .ready == .replicas')" = true ]
}
wait_versions() {
  local deadline=$(($(now_ms) + $3 * 1000))
  until versions_settled "$1" "$2"; do
    (($(now_ms) < deadline)) || fail "$1: pods not all on $2 after $3 s: $(w "$1" '[.pods[] | {name, version, phase}]' | jq -c .)"
    sleep 0.25
  done
}

# alive PID: running (a zombie counts as gone: PID 1 here may not reap the
# control plane's orphans). down_clean NAME: `strata down`, then no process
# of the platform is left.
alive() { platform_alive "$1"; }
down_clean() {
  local pids p left
  mapfile -t pids < <(ours "$STATE")
  ((${#pids[@]} >= 18)) || fail "expected at least 18 processes of ours, found ${#pids[@]}"
  strata down --timeout 90 >"$S/down.out" 2>&1 || fail "strata down: $(cat "$S/down.out")"
  left=$(ours "$STATE")
  [ -z "$left" ] || fail "processes left after down: $left"
  for p in "${pids[@]}"; do ! alive "$p" || fail "pid $p survived down: $(tr '\0' ' ' <"/proc/$p/cmdline")"; done
  ok "strata down ($1): all ${#pids[@]} processes gone"
}

# ---- 1. rolling update under constant load ---------------------------------
D1=$S/deploy-rollout
cp -r "$STRATA_SOURCE_DIR/deploy" "$D1"
up rollout "$D1"
TOKEN=$(user 1)
ok "platform up, a user registered and logged in through the gateway"

status_json
V1_OLD=$(w order-svc-v1 .version) V2_OLD=$(w order-svc-v2 .version)
[ "$(w order-svc-v1 '[.pods[].version] | unique | join(",")')" = "$V1_OLD" ] || fail "order-svc-v1 pods not on $V1_OLD"

# The new template: one more env var on order-svc-v1 (its first container's
# first env entry is OTEL_SERVICE_NAME; order-svc-v1 comes first in the file).
sed -i '0,/^          value: order-svc$/s//          value: order-svc\n        - name: ROLLOUT_MARK\n          value: "2"/' "$D1/order.yaml"
[ "$(grep -c ROLLOUT_MARK "$D1/order.yaml")" = 1 ] || fail "the sed edit of $D1/order.yaml"
strata apply -f "$D1" --dry-run >/dev/null 2>&1 || fail "the edited copy does not validate"

# ~90 requests/s (4 connections, 40 ms apart): under the gateway's rate
# limit on /v1/orders (6000/min per subject and gateway replica).
load "$S/wrk1.out" "$TOKEN" 40 4 60 6000
sleep 2 # some traffic before the rollout starts
r0=$(utc_ms) t0=$(now_ms)
strata apply -f "$D1" >"$S/apply.out" 2>&1 || fail "strata apply: $(cat "$S/apply.out")"
strata rollout restart order-svc-v2 >/dev/null || fail "rollout restart order-svc-v2"
strata rollout status order-svc-v1 --timeout 120 >"$S/rs1.out" || fail "rollout status order-svc-v1: $(cat "$S/rs1.out")"
strata rollout status order-svc-v2 --timeout 120 >"$S/rs2.out" || fail "rollout status order-svc-v2: $(cat "$S/rs2.out")"
status_json
V1_NEW=$(w order-svc-v1 .version) V2_NEW=$(w order-svc-v2 .version)
[ "$V1_NEW" != "$V1_OLD" ] || fail "order-svc-v1: version unchanged ($V1_OLD) after the template change"
[ "$V2_NEW" != "$V2_OLD" ] || fail "order-svc-v2: version unchanged ($V2_OLD) after rollout restart"
wait_versions order-svc-v1 "$V1_NEW" 30
wait_versions order-svc-v2 "$V2_NEW" 30
t1=$(now_ms) r1=$(utc_ms)
sleep 2 # and some after
load_stop "$S/wrk1.out"
during=$(gateway_orders "$r0" "$r1")
echo "note: rollout of order-svc-v1 + restart of order-svc-v2: $((t1 - t0)) ms; $SERVED requests in all, during it the gateways answered $during"
((${during%% *} >= 50)) || fail "too little traffic during the rollout: $during"
ok "rolling update of order-svc-v1 ($V1_OLD → $V1_NEW) and restart of order-svc-v2 under load: $SERVED requests, all 200, no socket error"
ok "every order-svc-v1 pod runs $V1_NEW, every order-svc-v2 pod $V2_NEW"

# Undo: back to the first revision, under load again.
load "$S/wrk2.out" "$TOKEN" 40 4 40 4000
sleep 1
r0=$(utc_ms) t0=$(now_ms)
strata rollout undo order-svc-v1 >/dev/null || fail "rollout undo order-svc-v1"
strata rollout status order-svc-v1 --timeout 120 >"$S/rs3.out" || fail "rollout status after undo: $(cat "$S/rs3.out")"
status_json
[ "$(w order-svc-v1 .version)" = "$V1_OLD" ] || fail "after undo order-svc-v1 is on $(w order-svc-v1 .version), not $V1_OLD"
wait_versions order-svc-v1 "$V1_OLD" 30
t1=$(now_ms) r1=$(utc_ms)
sleep 1
load_stop "$S/wrk2.out"
during=$(gateway_orders "$r0" "$r1")
echo "note: rollout undo of order-svc-v1: $((t1 - t0)) ms; $SERVED requests in all, during it the gateways answered $during"
((${during%% *} >= 20)) || fail "too little traffic during the undo: $during"
ok "rollout undo: order-svc-v1 back on $V1_OLD under load, $SERVED requests, all 200"
strata events order-svc-v1 >"$S/events1" || fail "strata events"
grep -q 'RollingUpdate .*undo' "$S/events1" || fail "no undo RollingUpdate event: $(cat "$S/events1")"
down_clean rollout

# ---- 2. HPA: up under load, down after -------------------------------------
D2=$S/deploy-hpa
cp -r "$STRATA_SOURCE_DIR/deploy" "$D2"
# order-svc-v1's CPU request (its container comes first in the file) 200m →
# 20m, so that a modest load is well above the HPA's 70%; the scale-down
# window 60 s → 5 s.
sed -i -e '0,/^            cpu: 200m/s//            cpu: 20m/' \
  -e 's/^      stabilizationWindowSeconds: 60$/      stabilizationWindowSeconds: 5/' "$D2/order.yaml"
[ "$(grep -c 'cpu: 20m' "$D2/order.yaml")" = 1 ] && grep -q 'stabilizationWindowSeconds: 5$' "$D2/order.yaml" \
  || fail "the sed edits of $D2/order.yaml"
# order-svc-v2 scales on requests/s (the Pods metric), 1–2 at 3 requests/s
# per replica: the gateway's 10 % of the load is well above it.
cat >>"$D2/order.yaml" <<'YAML'
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: order-svc-v2
  namespace: default
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: order-svc-v2
  minReplicas: 1
  maxReplicas: 2
  metrics:
  - type: Pods
    pods:
      metric:
        name: requests_per_second
      target:
        type: AverageValue
        averageValue: "3"
  behavior:
    scaleDown:
      stabilizationWindowSeconds: 5
YAML
up hpa "$D2" --hpa-interval-ms 1000
status_json
[ "$(w order-svc-v1 .replicas)" = 2 ] || fail "order-svc-v1 does not start with 2 replicas"
T1=$(user 1)
T2=$(user 2)
T3=$(user 3)
TOKENS="$T1 $T2 $T3"
ok "platform up with the HPA copy (order-svc-v1 requests 20m CPU), 3 users logged in"

# At rest the HPA keeps 2 (4 of its 1 s samples): what follows is the load's doing.
idle_end=$(($(now_ms) + 4000))
while (($(now_ms) < idle_end)); do
  status_json
  [ "$(w order-svc-v1 .replicas)" = 2 ] || fail "order-svc-v1 scaled to $(w order-svc-v1 .replicas) without load"
  [ "$(w order-svc-v2 .replicas)" = 1 ] || fail "order-svc-v2 scaled to $(w order-svc-v2 .replicas) without load"
  sleep 0.5
done
strata events order-svc-v1 >"$S/events0" || fail "strata events"
! grep -q 'Scaled' "$S/events0" || fail "scaling without load: $(grep Scaled "$S/events0")"
ok "HPA at rest: order-svc-v1 stays at 2 replicas"

# ~200 requests/s over 3 subjects (6 connections, 25 ms apart), at most 40 s.
load "$S/wrk3.out" "$TOKENS" 25 6 40 8000
t0=$(now_ms) deadline=$(($(now_ms) + 35000)) max=2
while :; do
  status_json
  max=$(w order-svc-v1 .replicas)
  ((max > 2)) && break
  (($(now_ms) < deadline)) || fail "order-svc-v1 not scaled up under load after 35 s: $(strata events order-svc-v1 | tail -5)"
  sleep 0.5
done
t_up=$(($(now_ms) - t0))
until status_json && [ "$(w order-svc-v2 .replicas)" = 2 ]; do
  (($(now_ms) < deadline)) || fail "order-svc-v2 (requests/s) not scaled up under load: $(strata events order-svc-v2 | tail -5)"
  sleep 0.5
done
strata events order-svc-v2 >"$S/events-v2" || fail "strata events"
grep -q 'ScaledUp .*requests/s per replica' "$S/events-v2" || fail "no ScaledUp on requests/s: $(cat "$S/events-v2")"
ok "HPA on requests/s: order-svc-v2 1 → 2 under load ($(grep ScaledUp "$S/events-v2" | head -1 | sed 's/.*HorizontalPodAutoscaler order-svc-v2: //'))"
sleep 3 # let it settle at its peak under load
status_json
peak=$(w order-svc-v1 .replicas)
load_stop "$S/wrk3.out"
strata events order-svc-v1 >"$S/events2" || fail "strata events"
grep -q 'ScaledUp .*HorizontalPodAutoscaler order-svc-v1' "$S/events2" || fail "no ScaledUp event: $(cat "$S/events2")"
echo "note: $(grep ScaledUp "$S/events2" | head -1 | sed 's/  */ /g')"
ok "HPA: order-svc-v1 scaled up to $max replicas $t_up ms after the load started (peak $peak), ScaledUp event; $SERVED requests all 200"

t0=$(now_ms) deadline=$(($(now_ms) + 45000))
until status_json && [ "$(w order-svc-v1 '.replicas == 2 and (.pods | length) == 2')" = true ]; do
  (($(now_ms) < deadline)) || fail "order-svc-v1 not back to 2 replicas 45 s after the load: $(w order-svc-v1 '{replicas, ready}' | jq -c .)"
  sleep 0.5
done
t_down=$(($(now_ms) - t0))
until status_json && [ "$(w order-svc-v2 '.replicas == 1 and (.pods | length) == 1')" = true ]; do
  (($(now_ms) < deadline)) || fail "order-svc-v2 not back to 1 replica after the load"
  sleep 0.5
done
strata events order-svc-v1 >"$S/events3" || fail "strata events"
grep -q 'ScaledDown .*HorizontalPodAutoscaler order-svc-v1' "$S/events3" || fail "no ScaledDown event: $(cat "$S/events3")"
echo "note: $(grep ScaledDown "$S/events3" | tail -1 | sed 's/  */ /g')"
ok "HPA: back to 2 replicas $t_down ms after the load stopped, ScaledDown event"
down_clean hpa

echo "PASS test_platform_rollout ($pass checks)"
