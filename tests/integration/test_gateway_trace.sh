#!/usr/bin/env bash
# The gateway's spans, exported over OTLP/HTTP to a real receiver on
# loopback: a request carrying a traceparent gives a server span (child of
# the caller's span), an upstream client span (child of the server span),
# and the backend's server span (child of the upstream span) — one tree.
set -euo pipefail
source "$STRATA_SOURCE_DIR/tests/integration/lib/stack.sh"
stack_init
pass=0
ok() { pass=$((pass + 1)); echo "ok   $*"; }

# An OTLP/HTTP receiver: every POST body to /v1/traces becomes a file.
rport=$(stack_port); mkdir -p "$STACK_WORK/otlp"
python3 - "$rport" "$STACK_WORK/otlp" >"$STACK_WORK/otlp.log" 2>&1 <<'PY' &
import http.server, sys, os, itertools
n = itertools.count()
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path == "/v1/traces":
            open(os.path.join(sys.argv[2], "%06d.json" % next(n)), "wb").write(body)
        self.send_response(200); self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2"); self.end_headers(); self.wfile.write(b"{}")
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
STACK_PIDS+=("$!")
up() { curl -s -o /dev/null -X POST --data '{}' "http://127.0.0.1:$rport/x"; }
stack_wait 10 up || stack_fail "OTLP receiver"
export OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:$rport OTEL_BSP_SCHEDULE_DELAY=100

stack_start a strata-demo-service OTEL_SERVICE_NAME=backend
gport=$(stack_port)
"$STRATA_BUILD_DIR/strata-proxy" --from "127.0.0.1:$gport" --to "http://127.0.0.1:$A_PORT" --workers 1 >"$STACK_WORK/gw.log" 2>&1 &
GW=$!; STACK_PIDS+=("$GW")
ready() { [ "$(curl -s "http://127.0.0.1:$gport/v1/hello/r")" = '{"hello":"r"}' ]; }
stack_wait 10 ready || stack_fail "gateway"

trace=4bf92f3577b34da6a3ce929d0e0e4736 parent=00f067aa0ba902b7
curl -s -o /dev/null -H "traceparent: 00-$trace-$parent-01" "http://127.0.0.1:$gport/v1/hello/traced"
spans() { cat "$STACK_WORK"/otlp/*.json 2>/dev/null | jq -c --arg t "$trace" '.resourceSpans[] |
  (.resource.attributes[] | select(.key == "service.name") | .value.stringValue) as $svc |
  .scopeSpans[].spans[] | select(.traceId == $t) | {svc: $svc, name, kind, id: .spanId, parent: .parentSpanId}'; }
three() { [ "$(spans | wc -l)" -ge 3 ]; }
stack_wait 10 three || stack_fail "spans not exported: $(spans)"
server=$(spans | jq -c 'select(.svc == "strata-proxy" and .kind == 2)')
upstream=$(spans | jq -c 'select(.svc == "strata-proxy" and .kind == 3)')
backend=$(spans | jq -c 'select(.svc == "backend" and .kind == 2 and .name != "GET /readyz")' | head -1)
[ "$(echo "$server" | jq -r .parent)" = "$parent" ] || stack_fail "gateway server span's parent: $server"
[ "$(echo "$upstream" | jq -r .parent)" = "$(echo "$server" | jq -r .id)" ] || stack_fail "upstream span's parent: $upstream / $server"
[ "$(echo "$backend" | jq -r .parent)" = "$(echo "$upstream" | jq -r .id)" ] || stack_fail "backend span's parent: $backend / $upstream"
ok "one trace: caller → gateway server span → upstream span → backend span"
echo "$pass checks passed"
