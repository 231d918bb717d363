#!/usr/bin/env bash
# Operating the platform, on small manifest directories of our own
# (tests/integration/platform/): manifest errors with file:line:field and
# nothing started; a crash-looping workload (exponential backoff,
# CrashLoopBackOff, `strata up` not ready while the rest runs); `strata drain`
# within PodDisruptionBudgets; `strata scale` (PDB, HPA bounds); `strata down`
# leaves no process behind. Temp state directory, free ports, no Prometheus.
set -euo pipefail
: "${STRATA_BUILD_DIR:?run through ctest (make test)}"
: "${STRATA_SOURCE_DIR:?run through ctest (make test)}"
source "$STRATA_SOURCE_DIR/tests/integration/lib/platform.sh"
trap "" PIPE
B=$STRATA_BUILD_DIR
P=$STRATA_SOURCE_DIR/tests/integration/platform
S=$(mktemp -d /tmp/strata-ops.XXXXXX)
chmod 0711 "$S" # PostgreSQL runs as its own user and must reach STATE/data
STATE=$S/state       # the platform runs (crash loop, then PDB/scale) share it
BADSTATE=$S/badstate # `strata up` on invalid manifests
pass=0
ok() { pass=$((pass + 1)); echo "ok   $*"; }
fail() { echo "FAIL: $*" >&2; exit 1; }
port() { "$B/strata-test-freeport"; }
strata() { "$B/strata" "$@" --state "$STATE"; }
now() { date +%s; }
ms() { echo $(($(date +%s%N) / 1000000)); }

# Every process whose command line or working directory names one of our
# state directories is ours (replicas run in STATE/pods/<replica>, servers
# keep their data in STATE/data).
ours() { platform_pids "$S/"; }
# A zombie is gone too: PID 1 here may not reap the control plane's orphans.
alive() { platform_alive "$1"; }
live_ours() { local p; for p in $(ours); do if alive "$p"; then echo "$p"; fi; done; return 0; }

cleanup() {
  local rc=$?
  trap - EXIT
  local st
  for st in "$STATE" "$BADSTATE"; do
    if [ -f "$st/control.json" ]; then "$B/strata" down --state "$st" --timeout 60 >/dev/null 2>&1 || true; fi
  done
  local left; left=$(ours)
  if [ -n "$left" ]; then
    echo "cleanup: killing leftovers: $left" >&2
    kill -KILL $left 2>/dev/null || true
  fi
  if [ "$rc" != 0 ]; then
    for st in "$BADSTATE" "$STATE"; do
      [ -f "$st/control.log" ] && { echo "--- $st/control.log (last 40 lines)" >&2; tail -40 "$st/control.log" >&2; }
    done
    [ -f "$S/events" ] && { echo "--- last events" >&2; tail -30 "$S/events" >&2; }
  fi
  [ -n "${STRATA_KEEP:-}" ] || rm -rf "$S"
  exit "$rc"
}
trap cleanup EXIT

# wait_for SECONDS DESCRIPTION COMMAND...: polls COMMAND every 250 ms.
wait_for() {
  local secs=$1 what=$2; shift 2
  local deadline=$(($(now) + secs))
  until "$@"; do
    (($(now) < deadline)) || fail "$what: not within $secs s"
    sleep 0.25
  done
}

# The status JSON, refreshed; jq over it.
status() { strata status -o json >"$S/st.json" 2>"$S/st.err" || fail "status: $(cat "$S/st.err")"; }
q() { jq -r "$@" "$S/st.json"; }
wl() { q --arg w "$1" ".workloads[] | select(.name == \$w) | $2"; }
# Names of the replicas of workload $1 that are ready and not terminating.
ready_pods() { wl "$1" '.pods[] | select(.ready and .phase != "Terminating") | .name' | sort; }
all_pods() { wl "$1" '.pods[].name' | sort; }

up_flags() {
  echo --admin "127.0.0.1:$(port)" --gateway-http "127.0.0.1:$(port)" --gateway-https "127.0.0.1:$(port)" \
    --prometheus-port 0 --alertmanager-port 0 --backoff-base-ms 200
}

down_clean() {
  local what=$1 pids p
  mapfile -t pids < <(live_ours)
  ((${#pids[@]} > 0)) || fail "$what: no process of ours before down"
  strata down --timeout 60 >"$S/down.out" 2>&1 || fail "strata down: $(cat "$S/down.out")"
  [ ! -e "$STATE/control.json" ] || fail "$what: control.json left after down"
  local left; left=$(live_ours)
  [ -z "$left" ] || fail "$what: processes left after down: $left"
  for p in "${pids[@]}"; do ! alive "$p" || fail "pid $p survived down: $(tr '\0' ' ' <"/proc/$p/cmdline")"; done
  ok "$what: strata down: all ${#pids[@]} processes gone"
}

########################################################################
# 1. Manifest errors: file:line:column and the field, every one of them;
#    nothing applied, nothing started.
########################################################################
rc=0
"$B/strata" apply --dry-run -f "$P/bad" >"$S/out" 2>"$S/err" || rc=$?
[ "$rc" = 1 ] || fail "apply --dry-run on bad/: exit $rc, expected 1: $(cat "$S/out" "$S/err")"
expect_err() { # FILE PATTERN: an error line at file:line:col naming the field
  grep -Eq "^error: [^ ]*$1:[0-9]+:[0-9]+: $2" "$S/err" || fail "no error '$1:LINE:COL: $2' in: $(cat "$S/err")"
}
expect_err bad/app.yaml 'spec\.replicas: expected an integer'
expect_err bad/app.yaml 'spec\.template\.spec\.containers\[0\]\.ports\[0\]\.containerPort: expected an integer'
expect_err bad/app.yaml 'kind: unknown kind "Pod"'
grep -q '3 errors; nothing applied' "$S/err" || fail "apply --dry-run bad/: no error count: $(cat "$S/err")"
ok "apply --dry-run: a wrong type, a quoted port and an unknown kind, each at file:line:col with its field; exit 1"

# Checks across resources run once every object reads cleanly on its own
# (docs/manifests.md): they have their own directory.
rc=0
"$B/strata" apply --dry-run -f "$P/bad-cross" >"$S/out" 2>"$S/err" || rc=$?
[ "$rc" = 1 ] || fail "apply --dry-run on bad-cross/: exit $rc, expected 1: $(cat "$S/out" "$S/err")"
expect_err bad-cross/mesh.yaml 'spec\.http\[0\]\.route\[0\]\.destination\.subset: .*"v2".*bad-cross/rules\.yaml:[0-9]+'
expect_err bad-cross/pdb.yaml 'spec\.minAvailable: 2 can never be satisfied.*bad-cross/app\.yaml:[0-9]+'
expect_err bad-cross/app.yaml 'spec\.template\.spec\.containers\[0\]\.env\[0\]\.valueFrom\.secretKeyRef\.name: .*no-such-secret'
grep -q '3 errors; nothing applied' "$S/err" || fail "apply --dry-run bad-cross/: no error count: $(cat "$S/err")"
ok "apply --dry-run: cross-resource errors (undefined subset, unsatisfiable PDB, missing Secret) name both files"

for d in bad bad-cross; do
  rm -rf "$BADSTATE"
  rc=0
  "$B/strata" up -f "$P/$d" --state "$BADSTATE" $(up_flags) --timeout 30 >"$S/out" 2>"$S/err" || rc=$?
  [ "$rc" = 1 ] || fail "strata up -f $d/: exit $rc, expected 1"
  grep -q "$d/[a-z]*\.yaml:[0-9]*:[0-9]*: " "$S/err" || fail "strata up -f $d/ does not print the errors: $(cat "$S/err")"
  grep -q 'nothing applied' "$S/err" || fail "strata up -f $d/: no 'nothing applied': $(cat "$S/err")"
  [ ! -e "$BADSTATE/control.json" ] || fail "strata up -f $d/ left a control.json"
  [ ! -e "$BADSTATE/data" ] || fail "strata up -f $d/ started the data layer ($BADSTATE/data exists)"
  [ -z "$(ls -A "$BADSTATE/pods" 2>/dev/null)" ] || fail "strata up -f $d/ created pods: $(ls "$BADSTATE/pods")"
  left=$(live_ours)
  [ -z "$left" ] || fail "strata up -f $d/ left processes: $left"
done
ok "strata up on invalid manifests: exit 1, the errors printed, nothing started (no process, no control.json, no data)"

rc=0
"$B/strata" apply --dry-run -f "$P/valid" >"$S/out" 2>"$S/err" || rc=$?
[ "$rc" = 0 ] || fail "apply --dry-run on valid/: exit $rc: $(cat "$S/out" "$S/err")"
grep -q 'nothing applied' "$S/out" || fail "apply --dry-run valid/ does not say nothing was applied: $(cat "$S/out")"
grep -Eq '^warning: [^ ]*valid/app\.yaml:[0-9]+:[0-9]+: spec\.template\.spec\.nodeSelector: not implemented' "$S/err" ||
  fail "no warning for nodeSelector: $(cat "$S/err")"
ok "apply --dry-run on a valid directory: exit 0, 'nothing applied', a warning for nodeSelector"

########################################################################
# 2. Crash-loop backoff: `crasher` exits 3 at once; `web` next to it.
########################################################################
t0=$(now)
rc=0
strata up -f "$P/crashloop" $(up_flags) --timeout 20 >"$S/up.out" 2>"$S/up.err" || rc=$?
[ "$rc" = 1 ] || fail "strata up with a crash-looping workload: exit $rc, expected 1: $(cat "$S/up.out" "$S/up.err")"
grep -q 'not ready after 20 s' "$S/up.err" || fail "up: no 'not ready' message: $(cat "$S/up.err")"
[ -f "$STATE/control.json" ] || fail "the platform stopped after up's timeout"
status
q '.ready' | grep -qx false || fail "status says ready with a crash-looping workload"
ok "strata up --timeout 20 with a crash-looping workload: exit 1 after $(($(now) - t0)) s, the platform keeps running"

crash_looping() {
  status
  local r ph
  r=$(wl crasher '.pods[0].restarts')
  ph=$(wl crasher '.pods[0].phase')
  [ "$r" -ge 3 ] && [ "$ph" = CrashLoopBackOff ]
}
wait_for 30 "crasher: restarts ≥ 3 and phase CrashLoopBackOff" crash_looping
[ "$(wl crasher '.ready')" = 0 ] || fail "crasher counted ready"
[ "$(wl crasher '.restarts')" -ge 3 ] || fail "crasher: workload restarts $(wl crasher '.restarts')"
ok "crasher: $(wl crasher '.pods[0].restarts') restarts, phase CrashLoopBackOff, not ready"

[ "$(wl web '.ready')" = 1 ] && [ "$(wl web '.replicas')" = 1 ] || fail "web not ready: $(wl web '.')"
[ "$(wl web '.restarts')" = 0 ] || fail "web restarted: $(wl web '.restarts')"
[ "$(wl web '.pods[0].phase')" = Running ] || fail "web phase: $(wl web '.pods[0].phase')"
ok "web, next to it, stays Running and ready with 0 restarts"

strata get pods >"$S/pods" || fail "strata get pods"
grep -Eq '^crasher-.* CrashLoopBackOff' "$S/pods" || fail "get pods does not show CrashLoopBackOff: $(cat "$S/pods")"
strata events >"$S/events" || fail "strata events"
grep 'BackOff' "$S/events" | grep '^[0-9:]*  crasher-' | grep 'container app exited (status 3)' |
  sed -n 's/.*restarting in \([0-9]*\) ms.*/\1/p' >"$S/delays" || true
mapfile -t D <"$S/delays"
((${#D[@]} >= 3)) || fail "fewer than 3 BackOff events for crasher's app: $(grep crasher "$S/events")"
[ "${D[0]}" = 200 ] || fail "the first restart waits ${D[0]} ms, expected the base 200"
doubled=0
for ((i = 1; i < ${#D[@]}; i++)); do
  ((D[i] >= D[i - 1])) || fail "backoff went down: ${D[*]}"
  ((D[i] == 2 * D[i - 1])) && doubled=1
done
((doubled)) || fail "backoff never doubled: ${D[*]}"
! grep -q '^[0-9:]*  web-.*BackOff' "$S/events" || fail "web has BackOff events: $(grep web- "$S/events")"
! grep -Eq '^[0-9:]*  crasher-[^ ]* +Ready ' "$S/events" || fail "crasher was reported Ready: $(grep crasher- "$S/events")"
ok "events: crasher's BackOff delays grow (${D[*]} ms), never Ready"

down_clean "crash loop"

########################################################################
# 3. PodDisruptionBudgets against `strata drain`.
########################################################################
t0=$(ms)
strata up -f "$P/pdb" $(up_flags) --timeout 90 >"$S/up.out" 2>"$S/up.err" ||
  fail "strata up -f pdb/: $(cat "$S/up.out" "$S/up.err")"
status
for w in solo:1 pair:2 scaled:1; do
  [ "$(wl "${w%:*}" '.ready')" = "${w#*:}" ] || fail "${w%:*}: $(wl "${w%:*}" '.')"
done
ok "strata up -f pdb/ on the same state: ready in $(($(ms) - t0)) ms"

# A dry run on a running platform applies nothing to it.
ver=$(q '.version')
strata apply --dry-run -f "$P/valid" >"$S/out" 2>"$S/err" || fail "apply --dry-run valid/: $(cat "$S/err")"
status
[ "$(q '.version')" = "$ver" ] && [ -z "$(wl web '.name')" ] || fail "apply --dry-run changed the running platform"
ok "apply --dry-run next to a running platform changes nothing (same version, no new workload)"

SOLO=$(ready_pods solo)
SOLO_PID=$(wl solo '.pods[0].pid')
[ -n "$SOLO" ] || fail "no ready solo replica"
rc=0
strata drain solo >"$S/out" 2>"$S/err" || rc=$?
[ "$rc" = 1 ] || fail "drain solo: exit $rc, expected 1: $(cat "$S/out" "$S/err")"
grep -q 'solo-pdb' "$S/err" || fail "drain solo: the message does not name the PDB: $(cat "$S/err")"
rc=0
strata drain "$SOLO" >"$S/out" 2>"$S/err2" || rc=$?
[ "$rc" = 1 ] && grep -q 'solo-pdb' "$S/err2" || fail "drain $SOLO: exit $rc: $(cat "$S/out" "$S/err2")"
sleep 1
status
[ "$(all_pods solo)" = "$SOLO" ] && [ "$(ready_pods solo)" = "$SOLO" ] || fail "solo changed: $(wl solo '.pods')"
[ "$(wl solo '.pods[0].pid')" = "$SOLO_PID" ] && alive "$SOLO_PID" || fail "solo's process changed"
ok "drain solo (1 replica, minAvailable 1): exit 1, '$(sed 's/^strata drain: //' "$S/err")'; nothing evicted"
rc=0
strata scale solo --replicas 0 >"$S/out" 2>"$S/err" || rc=$?
[ "$rc" = 1 ] && grep -q 'solo-pdb' "$S/err" || fail "scale solo to 0: exit $rc, expected a refusal naming solo-pdb: $(cat "$S/out" "$S/err")"
[ "$(wl solo '.replicas')" = 1 ] && [ "$(ready_pods solo)" = "$SOLO" ] || fail "solo changed after a refused scale"
ok "scale solo to 0 refused: it would break solo-pdb forever"

mapfile -t PAIR < <(ready_pods pair)
((${#PAIR[@]} == 2)) || fail "pair: ${#PAIR[@]} ready replicas"
strata drain "${PAIR[0]}" >"$S/out" 2>"$S/err" || fail "drain ${PAIR[0]}: $(cat "$S/out" "$S/err")"
grep -q '1 evicted' "$S/out" || fail "drain ${PAIR[0]}: $(cat "$S/out")"
# Back to 2 ready, the evicted one gone, a new one in its place.
pair_replaced() { # OLD...: 2 ready replicas, none of the OLD ones left among any
  status
  local now_all now_ready o
  now_all=$(all_pods pair) now_ready=$(ready_pods pair)
  [ "$(echo "$now_ready" | grep -c .)" = 2 ] || return 1
  for o in "$@"; do ! grep -qx "$o" <<<"$now_all" || return 1; done
  [ "$(wl pair '.replicas')" = 2 ]
}
wait_for 30 "pair back to 2 ready after draining ${PAIR[0]}" pair_replaced "${PAIR[0]}"
grep -qx "${PAIR[1]}" <<<"$(ready_pods pair)" || fail "the other replica ${PAIR[1]} was disturbed"
ok "drain one of pair's 2 replicas (minAvailable 1): evicted, replaced by a new one, 2 ready again"

mapfile -t PAIR < <(ready_pods pair)
rc=0
strata drain pair >"$S/out" 2>"$S/err" || rc=$?
[ "$rc" = 1 ] || fail "drain pair: exit $rc, expected 1: $(cat "$S/out" "$S/err")"
grep -q 'pair-pdb' "$S/err" && grep -q '1 evicted, 1 blocked' "$S/err" || fail "drain pair: $(cat "$S/err")"
status
left_old=0
for o in "${PAIR[@]}"; do grep -qx "$o" <<<"$(ready_pods pair)" && left_old=$((left_old + 1)); done
[ "$left_old" = 1 ] || fail "drain pair: $left_old of the 2 old replicas still ready, expected 1"
pair_replaced_one() { # exactly one of OLD left, 2 ready
  status
  local now_all n=0 o
  now_all=$(all_pods pair)
  [ "$(ready_pods pair | grep -c .)" = 2 ] || return 1
  for o in "$@"; do grep -qx "$o" <<<"$now_all" && n=$((n + 1)); done
  [ "$n" = 1 ]
}
wait_for 30 "pair back to 2 ready after draining the whole Deployment" pair_replaced_one "${PAIR[@]}"
ok "drain pair (2 replicas, minAvailable 1): one evicted, the other refused (exit 1); back to 2 ready"

########################################################################
# 4. strata scale.
########################################################################
n_ready() { status; [ "$(wl "$1" '.replicas')" = "$2" ] && [ "$(ready_pods "$1" | grep -c .)" = "$2" ] &&
  [ "$(wl "$1" '[.pods[] | select(.phase != "Terminating")] | length')" = "$2" ]; }
strata scale pair --replicas 3 >"$S/out" 2>&1 || fail "scale pair 3: $(cat "$S/out")"
wait_for 30 "pair: 3 ready" n_ready pair 3
ok "scale pair --replicas 3: 3 ready"
strata scale pair --replicas 1 >"$S/out" 2>&1 || fail "scale pair 1: $(cat "$S/out")"
wait_for 30 "pair: 1 ready (minAvailable 1 allows it)" n_ready pair 1
all_gone() { status; [ "$(all_pods pair | grep -c .)" = 1 ]; }
wait_for 30 "pair: the 2 scaled-down replicas gone" all_gone
ok "scale pair --replicas 1: down to 1 ready within its PDB (minAvailable 1)"

rc=0
strata scale scaled --replicas 5 >"$S/out" 2>&1 || rc=$?
[ "$rc" = 1 ] && grep -q 'HorizontalPodAutoscaler scaled' "$S/out" || fail "scale beyond the HPA's max: exit $rc: $(cat "$S/out")"
rc=0
strata scale scaled --replicas 0 >"$S/out" 2>&1 || rc=$?
[ "$rc" = 1 ] || fail "scale below the HPA's min: exit $rc: $(cat "$S/out")"
status
[ "$(wl scaled '.replicas')" = 1 ] || fail "a refused scale changed scaled: $(wl scaled '.replicas')"
strata scale scaled --replicas 2 >"$S/out" 2>&1 || fail "scale scaled 2 (within the HPA): $(cat "$S/out")"
wait_for 30 "scaled: 2 ready" n_ready scaled 2
rc=0
strata scale nosuch --replicas 1 >"$S/out" 2>&1 || rc=$?
[ "$rc" = 1 ] || fail "scale of an unknown Deployment: exit $rc"
ok "scale against an HPA (1-2): 5 and 0 refused naming the HPA, 2 done; an unknown Deployment refused"

########################################################################
# 5. down.
########################################################################
down_clean "pdb/scale"
echo "PASS test_platform_ops ($pass checks)"
