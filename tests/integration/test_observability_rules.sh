#!/usr/bin/env bash
# The rules, the Alertmanager config and the dashboards of deploy/observability,
# as strata up installs them (build/test_observability --install-only: the
# control plane's own installer, src/control/observability.c):
#   - promtool check rules, and promtool test rules with tests/observability/*_test.yml;
#   - amtool check-config, routing by severity (amtool config routes test);
#   - inhibition in a real Alertmanager: an availability page mutes the
#     latency ticket of the same service, not another service's;
#   - every metric name in the rules' and the dashboards' expressions is
#     exported by some component (a quoted name in src/ or services/).
set -euo pipefail
: "${STRATA_BUILD_DIR:?run through ctest (make test)}"
: "${STRATA_SOURCE_DIR:?run through ctest (make test)}"
B=$STRATA_BUILD_DIR
SRC=$STRATA_SOURCE_DIR
T=$(mktemp -d /tmp/strata-obs-rules.XXXXXX)
pass=0
ok() { pass=$((pass + 1)); echo "ok   $*"; }
fail() { echo "FAIL $*" >&2; exit 1; }
am_pid=
cleanup() {
  local rc=$?
  trap - EXIT
  if [ -n "$am_pid" ]; then
    kill "$am_pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$am_pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$am_pid" 2>/dev/null || true
    wait "$am_pid" 2>/dev/null || true
  fi
  [ $rc -ne 0 ] && [ -f "$T/am.log" ] && tail -20 "$T/am.log" >&2
  rm -rf "$T"
  exit $rc
}
trap cleanup EXIT

for tool in promtool amtool prometheus-alertmanager python3 curl; do
  command -v "$tool" >/dev/null || fail "$tool is not installed (scripts/install-deps)"
done
[ -x "$B/test_observability" ] || fail "$B/test_observability is not built"

# ---- install, as the control plane does --------------------------------------
"$B/test_observability" --install-only "$T" || fail "install from $SRC/deploy"
rules=("$T"/rules/*.yml)
[ ${#rules[@]} -ge 3 ] || fail "expected at least 3 rule files, got: ${rules[*]}"
ok "installed ${#rules[@]} rule files and alertmanager.yml"

promtool check rules "${rules[@]}" >"$T/check.log" 2>&1 || { cat "$T/check.log" >&2; fail "promtool check rules"; }
ok "promtool check rules"

# The unit tests name the installed files (rule_files: strata-red.yml ...),
# so they run beside them.
ntests=0
for t in "$SRC"/tests/observability/*_test.yml; do
  cp "$t" "$T/rules/"
  promtool test rules "$T/rules/$(basename "$t")" >"$T/test.log" 2>&1 || { cat "$T/test.log" >&2; fail "promtool test rules $(basename "$t")"; }
  ntests=$((ntests + 1))
done
[ $ntests -ge 2 ] || fail "no promtool unit tests found in tests/observability"
ok "promtool test rules ($ntests files)"

# ---- Alertmanager config -----------------------------------------------------
AM=$T/alertmanager.yml
amtool check-config "$AM" >"$T/amcheck.log" 2>&1 || { cat "$T/amcheck.log" >&2; fail "amtool check-config"; }
ok "amtool check-config"
for sev in page ticket; do
  out=$(amtool config routes test --config.file="$AM" --tree severity=$sev alertname=X service=s 2>/dev/null)
  grep -q "{severity=\"$sev\"}  receiver: strata-control" <<<"$out" || { echo "$out" >&2; fail "severity=$sev is not routed by its own route"; }
  amtool config routes test --config.file="$AM" --verify.receivers=strata-control severity=$sev >/dev/null 2>&1 ||
    fail "severity=$sev does not reach strata-control"
done
ok "routes: page and ticket each by their route to strata-control"

# ---- inhibition, in a real Alertmanager ----------------------------------------
port=$("$B/strata-test-freeport")
mkdir -p "$T/am-data"
prometheus-alertmanager --config.file="$AM" --storage.path="$T/am-data" \
  --web.listen-address=127.0.0.1:$port --cluster.listen-address= >"$T/am.log" 2>&1 &
am_pid=$!
AMURL=http://127.0.0.1:$port
for _ in $(seq 100); do
  curl -fsS "$AMURL/-/ready" >/dev/null 2>&1 && break
  kill -0 $am_pid 2>/dev/null || fail "Alertmanager exited"
  sleep 0.1
done
curl -fsS "$AMURL/-/ready" >/dev/null || fail "Alertmanager not ready on $port"
now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
curl -fsS -XPOST -H 'Content-Type: application/json' "$AMURL/api/v2/alerts" -d '[
  {"labels": {"alertname": "StrataAvailabilityBurnRate", "service": "order-svc", "severity": "page", "slo": "availability"}, "startsAt": "'"$now"'"},
  {"labels": {"alertname": "StrataLatencyBurnRate", "service": "order-svc", "severity": "ticket", "slo": "latency"}, "startsAt": "'"$now"'"},
  {"labels": {"alertname": "StrataLatencyBurnRate", "service": "user-svc", "severity": "ticket", "slo": "latency"}, "startsAt": "'"$now"'"}
]' >/dev/null || fail "POST /api/v2/alerts"
state() { # service alertname → state (active, suppressed) and inhibitors
  curl -fsS "$AMURL/api/v2/alerts?filter=service%3D%22$1%22&filter=alertname%3D%22$2%22" |
    python3 -c 'import json,sys; a=json.load(sys.stdin); print(" ".join(x["status"]["state"]+":"+str(len(x["status"]["inhibitedBy"])) for x in a))'
}
got=
for _ in $(seq 100); do
  got="$(state order-svc StrataLatencyBurnRate) $(state user-svc StrataLatencyBurnRate) $(state order-svc StrataAvailabilityBurnRate)"
  [ "$got" = "suppressed:1 active:0 active:0" ] && break
  sleep 0.1
done
[ "$got" = "suppressed:1 active:0 active:0" ] ||
  fail "inhibition: order-svc latency ticket, user-svc latency ticket, order-svc page = '$got', want 'suppressed:1 active:0 active:0'"
ok "inhibition: order-svc's availability page mutes its latency ticket, not user-svc's"
kill "$am_pid"
wait "$am_pid" 2>/dev/null || true
am_pid=
rm -f "$T/am.log"

# ---- every metric used is exported ------------------------------------------------
# Names come from the installed rules (JSON) and the dashboards' targets:
# identifiers that are not functions, keywords, label names, label values,
# durations or numbers. Recording rules (level:metric:ops) must be defined by
# the rules; `up` and ALERTS are Prometheus' own; histogram series map to
# their family (_bucket, _sum, _count). Everything else must appear quoted
# in src/ or services/ (metrics_register_*, metrics_counter_func, the
# process_* table in core/metrics.c).
python3 - "$T/rules" "$SRC/deploy/observability/dashboards" >"$T/names" <<'EOF' || fail "metric name extraction"
import json, os, re, sys
rules_dir, dash_dir = sys.argv[1], sys.argv[2]
exprs, records = [], set()
for f in sorted(os.listdir(rules_dir)):
    if f.endswith("_test.yml"):
        continue
    for g in json.load(open(os.path.join(rules_dir, f)))["groups"]:
        for r in g["rules"]:
            exprs.append((f, r["expr"]))
            if "record" in r:
                records.add(r["record"])
ndash = 0
def walk(o, f):
    if isinstance(o, dict):
        for k, v in o.items():
            if k == "expr" and isinstance(v, str):
                exprs.append((f, v))
            elif k == "definition" and isinstance(v, str):
                m = re.match(r"\s*label_values\((.*),\s*\w+\)\s*$", v)
                if m:
                    exprs.append((f, m.group(1)))
            else:
                walk(v, f)
    elif isinstance(o, list):
        for v in o:
            walk(v, f)
for f in sorted(os.listdir(dash_dir)):
    if f.endswith(".json"):
        d = json.load(open(os.path.join(dash_dir, f)))
        assert d.get("schemaVersion", 0) >= 36, f + ": schemaVersion"
        walk(d, f)
        ndash += 1
keywords = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
            "offset", "inf", "nan", "Inf", "NaN"}
names = {}
for f, e in exprs:
    e = re.sub(r'"(\\.|[^"\\])*"', '""', e)                 # strings
    e = re.sub(r"\{[^}]*\}", "", e)                         # label matchers
    e = re.sub(r"\[[^\]]*\]", "", e)                        # ranges, subqueries
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    for m in re.finditer(r"(?<![\w.$])([a-zA-Z_:][\w:]*)(\s*\()?", e):
        n = m.group(1)
        if m.group(2) or n in keywords:
            continue
        names.setdefault(n, set()).add(f)
missing_records = []
for n, fs in sorted(names.items()):
    if ":" in n:
        if n not in records:
            missing_records.append(n)
        continue
    if n in ("up", "ALERTS", "ALERTS_FOR_STATE"):
        continue
    base = re.sub(r"_(bucket|sum|count)$", "", n)
    print(n, base, ",".join(sorted(fs)))
for n in missing_records:
    print("RECORD", n, ",".join(sorted(names[n])))
EOF
[ -s "$T/names" ] || fail "no metric names found"
bad=0
nnames=0
while read -r name base files; do
  if [ "$name" = RECORD ]; then
    echo "recording rule $base used in $files is not defined by the rules" >&2
    bad=1
    continue
  fi
  nnames=$((nnames + 1))
  if ! grep -rqF -- "\"$name\"" "$SRC/src" "$SRC/services" && ! grep -rqF -- "\"$base\"" "$SRC/src" "$SRC/services"; then
    echo "$name (used in $files) is exported by no component in src/ or services/" >&2
    bad=1
  fi
done <"$T/names"
[ $bad -eq 0 ] || fail "metric names"
[ $nnames -ge 20 ] || fail "only $nnames metric names found: the extraction is broken"
ok "$nnames metric names used by the rules and dashboards are all exported"

echo "$pass passed"
