#!/usr/bin/env bash
# The Loki shipper (src/control/logship.c) end to end against a Loki push
# receiver (lib/loki_receiver.py, which checks every push against Loki's
# documented push API: gzip, JSON shape, string labels, [ns, line] values,
# timestamps in order per stream). The shipper runs in test_logship's
# driver mode (a loop with logship_start, as the control plane runs it).
# Log files are written as the runtime writes them, with rotations:
#   1. every line arrives exactly once, with its labels;
#   2. receiver outage: lines written meanwhile arrive after it returns,
#      nothing twice, and strata_logship_batches_total{result="retry"} moved;
#   3. shipper restart: it resumes from STATE/logship.json, nothing lost or
#      repeated.
set -euo pipefail
: "${STRATA_BUILD_DIR:?run through ctest (make test)}"
: "${STRATA_SOURCE_DIR:?run through ctest (make test)}"
B=$STRATA_BUILD_DIR
LIB=$STRATA_SOURCE_DIR/tests/integration/lib
T=$(mktemp -d /tmp/strata-logship.XXXXXX)
LOGS=$T/logs
OUT=$T/received.jsonl
METRICS=$T/metrics.txt
mkdir -p "$LOGS"
RX_PID="" SHIP_PID=""
pass=0
ok() { pass=$((pass + 1)); echo "ok   $*"; }

cleanup() {
  local rc=$?
  trap - EXIT
  [ -n "$SHIP_PID" ] && kill "$SHIP_PID" 2>/dev/null && wait "$SHIP_PID" 2>/dev/null || true
  [ -n "$RX_PID" ] && kill "$RX_PID" 2>/dev/null && wait "$RX_PID" 2>/dev/null || true
  if [ "$rc" != 0 ]; then
    echo "--- shipper log (last 30 lines)" >&2; tail -30 "$T/ship.log" >&2 2>/dev/null || true
    echo "--- receiver errors" >&2; cat "$OUT.errors" >&2 2>/dev/null || true
  fi
  [ -n "${STRATA_KEEP:-}" ] || rm -rf "$T"
  exit "$rc"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

PORT=$("$B/strata-test-freeport")

start_receiver() {
  python3 "$LIB/loki_receiver.py" --port "$PORT" --out "$OUT" >>"$T/rx.log" 2>&1 &
  RX_PID=$!
  for _ in $(seq 100); do
    curl -fsS "http://127.0.0.1:$PORT/ready" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  fail "the receiver did not start"
}
stop_receiver() { kill "$RX_PID"; wait "$RX_PID" 2>/dev/null || true; RX_PID=""; }

start_shipper() {
  LOGSHIP_DRIVER=1 LOKI_URL="http://127.0.0.1:$PORT" LOGSHIP_LOGS="$LOGS" LOGSHIP_STATE="$T/logship.json" \
    LOGSHIP_METRICS="$METRICS" LOGSHIP_BACKOFF_MAX_MS=2000 "$B/test_logship" >>"$T/ship.log" 2>&1 &
  SHIP_PID=$!
}
stop_shipper() { kill -TERM "$SHIP_PID"; wait "$SHIP_PID" || fail "the shipper exited with $?"; SHIP_PID=""; }

# emit FILE PREFIX FROM TO: JSON lines msg=PREFIX-N as the runtime captures them
# (ts in RFC 3339 ms, levels cycling, a non-JSON line every 50th).
emit() {
  python3 - "$@" <<'EOF'
import datetime, json, sys
path, prefix, a, b = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
levels = ["debug", "info", "warn", "error"]
with open(path, "a") as f:
    for i in range(a, b):
        if i % 50 == 49:
            f.write("raw text %s-%d\n" % (prefix, i))
            continue
        ts = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        f.write(json.dumps({"ts": ts, "level": levels[i % 4], "msg": "%s-%d" % (prefix, i), "service": "x",
                            "trace_id": "%032x" % i}) + "\n")
EOF
}
# rotate DIR/C: what the runtime does at 10 MiB
rotate() {
  local f=$1
  [ -f "$f.2" ] && mv "$f.2" "$f.3"
  [ -f "$f.1" ] && mv "$f.1" "$f.2"
  mv "$f" "$f.1"
  : >"$f"
}

# check N: the receiver holds exactly the lines emitted so far, each once
# (expected: prefixes and ranges in $T/expected), within 20 s.
check() {
  local what=$1 out
  for _ in $(seq 200); do
    if out=$(python3 - "$OUT" "$T/expected" <<'EOF'
import collections, json, sys
got = collections.Counter()
labels = {}
try:
    for rec in open(sys.argv[1]):
        r = json.loads(rec)
        line = r["line"]
        key = json.loads(line)["msg"] if line.startswith("{") else line[len("raw text "):]
        got[key] += 1
        labels[key] = r["labels"]
except FileNotFoundError:
    pass
want = set()
for spec in open(sys.argv[2]):
    prefix, a, b = spec.split()
    want |= {"%s-%d" % (prefix, i) for i in range(int(a), int(b))}
missing = want - set(got)
dups = [k for k, n in got.items() if n > 1]
extra = set(got) - want
if missing or dups or extra:
    print("missing %d (e.g. %s), duplicated %d (e.g. %s), unexpected %d" %
          (len(missing), sorted(missing)[:3], len(dups), dups[:3], len(extra)))
    sys.exit(1)
# labels: workload, replica, container, level, as the file says
for k, lab in labels.items():
    prefix = k.rsplit("-", 1)[0]
    rep, cont = prefix.rsplit("/", 1) if "/" in prefix else (prefix, "app")
    i = int(k.rsplit("-", 1)[1])
    lvl = "unknown" if i % 50 == 49 else ["debug", "info", "warn", "error"][i % 4]
    if lab != {"workload": rep.rsplit("-", 2)[0], "replica": rep, "container": cont, "level": lvl}:
        print("labels of %s: %s" % (k, lab)); sys.exit(1)
print("%d lines, each once" % len(got))
EOF
    ); then ok "$what: $out"; return 0; fi
    sleep 0.1
  done
  fail "$what: $out"
}

RA=order-svc-1a2b3c4d-aaaaa RB=user-svc-7c690d42-bbbbb
mkdir -p "$LOGS/$RA" "$LOGS/$RB"
# messages are "<replica>/<container>-<n>" so the checker knows the labels to expect
e() { emit "$LOGS/$1/$2.log" "$1/$2" "$3" "$4"; echo "$1/$2 $3 $4" >>"$T/expected"; }

# 1. lines already there, then more with a rotation mid-way, while shipping
e $RA app 0 300
e $RA proxy 0 100
start_receiver
start_shipper
e $RB app 0 200
sleep 0.5
e $RA app 300 400
rotate "$LOGS/$RA/app.log"
e $RA app 400 500
check "first delivery, across a rotation"

# 2. an outage of the receiver
stop_receiver
e $RA app 500 700
rotate "$LOGS/$RA/app.log"
e $RA app 700 800
e $RB app 200 300
for _ in $(seq 100); do
  retries=$(sed -n 's/^strata_logship_batches_total{result="retry"} \([0-9]*\)$/\1/p' "$METRICS" 2>/dev/null)
  [ "${retries:-0}" -ge 2 ] && break
  sleep 0.1
done
[ "${retries:-0}" -ge 2 ] || fail "the retry counter did not move during the outage (${retries:-none})"
ok "outage: $retries failed pushes counted as retries"
start_receiver
check "after the outage"

# 3. a restart of the shipper resumes from its positions
stop_shipper
grep -q '"positions"' "$T/logship.json" || fail "no positions in logship.json"
e $RA app 800 900
e $RA proxy 100 150
start_shipper
check "after a shipper restart"
for _ in $(seq 50); do # the driver writes its metrics every 200 ms
  lines=$(sed -n 's/^strata_logship_lines_total \([0-9]*\)$/\1/p' "$METRICS")
  [ "${lines:-0}" -eq 150 ] && break
  sleep 0.1
done
[ "${lines:-0}" -eq 150 ] || fail "strata_logship_lines_total is ${lines:-missing}, expected the 150 lines written since the restart"
ok "strata_logship_lines_total counts the restarted shipper's 150 lines"
[ -s "$OUT.errors" ] && fail "the receiver refused pushes: $(head -3 "$OUT.errors")"
ok "every push valid against Loki's push API"
echo "$pass checks passed"
