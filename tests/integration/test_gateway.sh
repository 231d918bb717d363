#!/usr/bin/env bash
# The gateway's routing and operations, end to end with real processes and
# curl: weighted destinations (canary split), regex / header matches,
# redirects, direct responses, header add/remove, host rewrite, HTTP→HTTPS
# redirect and HSTS, active health checks, least-request balancing, the
# admin listener (metrics, config, reload, drain), per-route and
# per-listener limits (413, 414, 431, smuggling → 400, slowloris),
# per-client-IP connection limits and quick mode.
set -euo pipefail
source "$STRATA_SOURCE_DIR/tests/integration/lib/stack.sh"
stack_init
trap "" PIPE   # writes to connections the gateway refused must fail, not kill the test
pass=0
ok() { pass=$((pass + 1)); echo "ok   $*"; }

stack_start a strata-demo-service OTEL_SERVICE_NAME=backend-a
stack_start b strata-demo-service OTEL_SERVICE_NAME=backend-b
dead=$(stack_port)
port=$(stack_port); tport=$(stack_port); rport=$(stack_port); lport=$(stack_port); admin=$(stack_port)
# A backend that accepts and never answers: requests to it stay in flight.
hole=$(stack_port)
python3 -c 'import socket,sys,time
s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(64)
held=[]
while True: held.append(s.accept()[0])' "$hole" &
STACK_PIDS+=("$!")
mkdir -p "$STACK_WORK/tls"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=localhost \
  -addext subjectAltName=DNS:localhost -keyout "$STACK_WORK/tls/key.pem" -out "$STACK_WORK/tls/cert.pem" 2>/dev/null
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=rsa.test \
  -addext subjectAltName=DNS:rsa.test -keyout "$STACK_WORK/tls/rsa.key" -out "$STACK_WORK/tls/rsa.pem" 2>/dev/null

write_config() { # VERSION PONG
cat >"$STACK_WORK/gw.json" <<JSON
{"version": "$1",
 "admin": {"address": "127.0.0.1:$admin"},
 "listeners": [{"name": "http", "address": "127.0.0.1:$port", "max_body_bytes": 65536, "header_timeout_ms": 500},
               {"name": "https", "address": "127.0.0.1:$tport",
                "tls": {"certificates": [{"cert_file": "$STACK_WORK/tls/cert.pem", "key_file": "$STACK_WORK/tls/key.pem"},
                                         {"cert_file": "$STACK_WORK/tls/rsa.pem", "key_file": "$STACK_WORK/tls/rsa.key"}],
                        "hsts": {"max_age_s": 31536000, "include_subdomains": true}}},
               {"name": "redirect", "address": "127.0.0.1:$rport", "redirect_https_port": $tport},
               {"name": "limited", "address": "127.0.0.1:$lport", "max_connections_per_ip": 2}],
 "clusters": [{"name": "a", "endpoints": ["127.0.0.1:$A_PORT"]},
              {"name": "b", "endpoints": ["127.0.0.1:$B_PORT"]},
              {"name": "checked", "endpoints": ["127.0.0.1:$A_PORT", "127.0.0.1:$dead"],
               "health_check": {"path": "/healthz", "interval_ms": 100, "timeout_ms": 200, "unhealthy_threshold": 2}},
              {"name": "lr", "lb": "least_request", "endpoints": ["127.0.0.1:$B_PORT", "127.0.0.1:$hole"]}],
 "routes": [{"name": "ping", "exact": "/ping", "direct_response": {"status": 200, "body": "$2"}},
            {"name": "teapot", "exact": "/teapot", "direct_response": {"status": 418, "body": "{\"tea\":true}", "content_type": "application/json"}},
            {"name": "old", "prefix": "/old", "redirect": {"prefix": "/new", "code": 301}},
            {"name": "moved", "exact": "/moved", "redirect": {"scheme": "https", "host": "example.test", "path": "/there", "code": 308}},
            {"name": "digits", "regex": "/items/[0-9]+", "direct_response": {"status": 200, "body": "digits"}},
            {"name": "canary", "prefix": "/canary", "rewrite_prefix": "/v1/echo",
             "destinations": [{"cluster": "a", "weight": 80}, {"cluster": "b", "weight": 20}]},
            {"name": "beta", "prefix": "/v1/echo", "headers": [{"name": "x-beta", "exact": "1"}], "cluster": "b"},
            {"name": "echo", "prefix": "/v1/echo", "cluster": "a", "max_body_bytes": 1000,
             "request_headers": {"set": {"x-added": "yes", "x-env": "test"}, "add": {"x-multi": "two"}, "remove": ["x-secret"]},
             "response_headers": {"set": {"x-served-by": "strata"}, "remove": ["x-request-id"]}},
            {"name": "rehost", "prefix": "/rehost", "rewrite_prefix": "/v1/echo", "rewrite_host": "internal.test", "cluster": "a"},
            {"name": "checked", "prefix": "/checked", "rewrite_prefix": "/v1/hello", "cluster": "checked"},
            {"name": "lr", "prefix": "/lr", "rewrite_prefix": "/v1/hello", "cluster": "lr", "timeout_ms": 20000},
            {"name": "hello", "prefix": "/v1/hello", "cluster": "a"}]}
JSON
}
write_config v1 pong
stack_proxy gw "$STACK_WORK/gw.json" "$admin" --workers 2
P=http://127.0.0.1:$port

# --- direct responses, regex, redirects
[ "$(curl -s "$P/ping")" = pong ] || stack_fail "direct response"
out=$(curl -s -D "$STACK_WORK/h" "$P/teapot")
[ "$out" = '{"tea":true}' ] && grep -qi '^content-type: application/json' "$STACK_WORK/h" && head -1 "$STACK_WORK/h" | grep -q ' 418' \
  || stack_fail "direct response status and content type: $out"
[ "$(curl -s "$P/items/123")" = digits ] || stack_fail "regex route"
[ "$(curl -s -o /dev/null -w '%{http_code}' "$P/items/12x")" = 404 ] || stack_fail "regex is anchored"
[ "$(curl -s -o /dev/null -w '%{http_code} %{redirect_url}' "$P/old/a/b?q=1")" = "301 http://127.0.0.1:$port/new/a/b?q=1" ] \
  || stack_fail "prefix redirect: $(curl -s -o /dev/null -w '%{http_code} %{redirect_url}' "$P/old/a/b?q=1")"
[ "$(curl -s -o /dev/null -w '%{http_code} %{redirect_url}' "$P/moved")" = "308 https://example.test/there" ] || stack_fail "full redirect"
ok "direct responses, anchored regex paths, redirects"

# --- weighted destinations: an 80/20 canary over 2,000 requests
urls=(); for i in $(seq 2000); do urls+=("$P/canary?i=$i"); done
curl -s "${urls[@]}" | jq -r .service >"$STACK_WORK/split"
na=$(grep -c backend-a "$STACK_WORK/split" || true); nb=$(grep -c backend-b "$STACK_WORK/split" || true)
[ $((na + nb)) = 2000 ] || stack_fail "canary: $na + $nb answers of 2000"
# expected 1600/400; binomial sd ≈ 18, so ±100 is > 5 sd
[ "$na" -ge 1500 ] && [ "$na" -le 1700 ] || stack_fail "canary split $na/$nb, expected about 1600/400"
ok "weighted destinations split 80/20 ($na/$nb of 2000)"

# --- header match, header rules, host rewrite, forwarded headers
[ "$(curl -s -H 'x-beta: 1' "$P/v1/echo" | jq -r .service)" = backend-b ] || stack_fail "header match"
[ "$(curl -s -H 'x-beta: 2' "$P/v1/echo" | jq -r .service)" = backend-a ] || stack_fail "header mismatch falls through"
out=$(curl -s -D "$STACK_WORK/h" -H 'x-secret: s3' -H 'x-env: prod' -H 'x-multi: one' -H 'X-Request-Id: gw-1' "$P/v1/echo?z=1")
echo "$out" | jq -e '.headers["x-added"] == "yes" and .headers["x-env"] == "test" and (.headers | has("x-secret") | not)
  and .headers["x-multi"] == "one, two" and .headers["x-request-id"] == "gw-1" and .target == "/v1/echo?z=1"
  and .headers["x-forwarded-proto"] == "http" and .headers["x-forwarded-for"] == "127.0.0.1"
  and (.headers.traceparent | test("^00-[0-9a-f]{32}-[0-9a-f]{16}-01$"))' >/dev/null || stack_fail "request header rules: $out"
tr -d '\r' <"$STACK_WORK/h" | grep -qi '^x-served-by: strata$' || stack_fail "response header set"
tr -d '\r' <"$STACK_WORK/h" | grep -qi '^x-request-id:' && stack_fail "response header remove"
[ "$(curl -s "$P/rehost" | jq -r .headers.host)" = internal.test ] || stack_fail "host rewrite"
ok "header matches, request/response header set/add/remove, host rewrite, forwarded headers"

# --- HTTPS: HSTS on answers; the redirect listener sends plain HTTP to HTTPS
hsts=$(curl -s --cacert "$STACK_WORK/tls/cert.pem" --resolve "localhost:$tport:127.0.0.1" -D - -o /dev/null \
  "https://localhost:$tport/v1/hello/x" | tr -d '\r' | grep -i '^strict-transport-security:' || true)
[ "$hsts" = "Strict-Transport-Security: max-age=31536000; includeSubDomains" ] || stack_fail "HSTS: '$hsts'"
out=$(curl -s -o /dev/null -w '%{http_code} %{redirect_url}' -H 'Host: localhost' "http://127.0.0.1:$rport/v1/hello/x?y=1")
[ "$out" = "308 https://localhost:$tport/v1/hello/x?y=1" ] || stack_fail "HTTP→HTTPS redirect: $out"
[ "$(curl -s -L --cacert "$STACK_WORK/tls/cert.pem" --resolve "localhost:$rport:127.0.0.1" --resolve "localhost:$tport:127.0.0.1" \
  "http://localhost:$rport/v1/hello/followed")" = '{"hello":"followed"}' ] || stack_fail "following the HTTPS redirect"
ok "HSTS, HTTP→HTTPS redirect (308)"

# --- TLS: 1.2 and 1.3, ECDSA and RSA chosen by SNI, resumption, handshake metrics
sc() { openssl s_client -connect "127.0.0.1:$tport" "$@" </dev/null 2>&1; }
out=$(sc -tls1_3 -servername localhost)
[[ "$out" == *"TLSv1.3"* && "$out" == *"CN = localhost"* && "$out" == *"Server public key is 256 bit"* ]] \
  || stack_fail "TLS 1.3 ECDSA: $(echo "$out" | grep -E 'Protocol|public key|subject')"
out=$(sc -tls1_2 -servername rsa.test); [[ "$out" == *"TLSv1.2"* && "$out" == *"CN = rsa.test"* ]] \
  || stack_fail "TLS 1.2 RSA by SNI: $(echo "$out" | grep -E 'Protocol|subject')"
echo "$out" | grep -q "Server public key is 2048 bit" || stack_fail "RSA certificate for rsa.test"
out=$(sc -tls1_3 -servername unknown.test); [[ "$out" == *"CN = localhost"* ]] || stack_fail "default certificate for an unknown name"
out=$(sc -tls1_1 -servername localhost) && stack_fail "TLS 1.1 accepted: $out"
out=$(sc -alpn http/1.1 -servername localhost); [[ "$out" == *"ALPN protocol: http/1.1"* ]] || stack_fail "ALPN"
printf 'GET /ping HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' |
  openssl s_client -connect "127.0.0.1:$tport" -servername localhost -tls1_2 -sess_out "$STACK_WORK/sess" -quiet >/dev/null 2>&1 || true
out=$(printf 'GET /ping HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' |
  openssl s_client -connect "127.0.0.1:$tport" -servername localhost -tls1_2 -sess_in "$STACK_WORK/sess" 2>&1 || true)
[[ "$out" == *"Reused, TLSv1.2"* ]] || stack_fail "session resumption: $(echo "$out" | grep -E 'New|Reused')"
m=$(curl -s "$GW_ADMIN/metrics")
echo "$m" | grep -Eq '^strata_proxy_tls_handshakes_total [1-9]' || stack_fail "handshake metric"
echo "$m" | grep -Eq '^strata_proxy_tls_resumptions_total [1-9]' || stack_fail "resumption metric"
echo "$m" | grep -Eq '^strata_proxy_tls_handshake_failures_total [1-9]' || stack_fail "handshake failure metric"
ok "TLS 1.2 and 1.3, ECDSA and RSA by SNI, default certificate, TLS 1.1 refused, ALPN, resumption, handshake metrics"

# --- active health checks eject the dead endpoint; nothing fails meanwhile
unhealthy() { curl -s "$GW_ADMIN/config" | jq -e --arg e "127.0.0.1:$dead" '.endpoints[] | select(.endpoint == $e) | .healthy == false' >/dev/null; }
stack_wait 5 unhealthy || stack_fail "the dead endpoint was not marked unhealthy"
for i in $(seq 20); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' "$P/checked/h$i")" = 200 ] || stack_fail "a request went to the ejected endpoint"
done
curl -s "$GW_ADMIN/metrics" | grep -q "^strata_proxy_endpoint_healthy{cluster=\"checked\",endpoint=\"127.0.0.1:$dead\"} 0" \
  || stack_fail "endpoint health metric"
ok "health checks take a dead endpoint out of balancing"

# --- least request: with one request stuck on an endpoint, new ones go to the other
for try in $(seq 10); do
  curl -s -o /dev/null --max-time 30 "$P/lr/stuck$try" &
  bg=$!
  stuck() { curl -s "$GW_ADMIN/config" | jq -e --arg e "127.0.0.1:$hole" '.endpoints[] | select(.endpoint == $e) | .active >= 1' >/dev/null; }
  stack_wait 2 stuck && break
  wait "$bg" || true
done
stuck || stack_fail "could not get a request in flight on the silent endpoint"
for i in $(seq 20); do
  [ "$(curl -s --max-time 5 -o /dev/null -w '%{http_code}' "$P/lr/x$i")" = 200 ] || stack_fail "least request sent request $i to the busy endpoint"
done
kill "$bg" 2>/dev/null || true; wait "$bg" 2>/dev/null || true
ok "least request (power of two choices) avoids the busy endpoint"

# --- limits: route body limit, listener body limit, URI, headers, smuggling, slowloris
raw() { # PORT: send stdin as raw bytes, print the response's status line
  exec 3<>"/dev/tcp/127.0.0.1/$1"; cat >&3; timeout 5 head -1 <&3 | tr -d '\r'; exec 3<&- 3>&-
}
out=$(head -c 2000 /dev/zero | tr '\0' x | curl -s -D "$STACK_WORK/h" -X POST --data-binary @- "$P/v1/echo")
echo "$out" | jq -e '.error.code == "body_too_large" and .error.route == "echo"' >/dev/null || stack_fail "route body limit: $out"
[ "$(head -c 70000 /dev/zero | curl -s -o /dev/null -w '%{http_code}' -X POST --data-binary @- "$P/v1/hello/x")" = 413 ] || stack_fail "listener body limit"
[ "$(curl -s -o /dev/null -w '%{http_code}' "$P/v1/hello/$(head -c 9000 /dev/zero | tr '\0' a)")" = 414 ] || stack_fail "414"
[ "$(curl -s -o /dev/null -w '%{http_code}' -H "x-big: $(head -c 40000 /dev/zero | tr '\0' a)" "$P/v1/hello/x")" = 431 ] || stack_fail "431"
st=$(printf 'POST /v1/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n' | raw "$port")
[[ "$st" == "HTTP/1.1 400"* ]] || stack_fail "CL+TE smuggling: $st"
st=$(printf 'GET /v1/hello/x HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab' | raw "$port")
[[ "$st" == "HTTP/1.1 400"* ]] || stack_fail "duplicate Content-Length: $st"
st=$(printf 'GET /v1/hello/x HTTP/1.1\r\nHost: x\r\nX-A: a\r\n  folded\r\n\r\n' | raw "$port")
[[ "$st" == "HTTP/1.1 400"* ]] || stack_fail "obs-fold: $st"
# slowloris: a head that never ends is closed after the listener's 500 ms header timeout
exec 4<>"/dev/tcp/127.0.0.1/$port"; printf 'GET / HTTP/1.1\r\nHost: x\r\n' >&4
t0=$(date +%s%N); timeout 5 cat <&4 >/dev/null || true; ms=$(( ($(date +%s%N) - t0) / 1000000 )); exec 4<&- 4>&-
[ "$ms" -lt 3000 ] || stack_fail "slowloris connection open for $ms ms"
ok "limits: 413 (route and listener), 414, 431, smuggling → 400, slowloris closed after $ms ms"

# --- per-client-IP connection limit: the third connection is refused
exec 5<>"/dev/tcp/127.0.0.1/$lport" 6<>"/dev/tcp/127.0.0.1/$lport"
printf 'GET /ping HTTP/1.1\r\nHost: x\r\n\r\n' >&5; timeout 5 head -1 <&5 | grep -q ' 200' || stack_fail "first connection"
exec 7<>"/dev/tcp/127.0.0.1/$lport"
printf 'GET /ping HTTP/1.1\r\nHost: x\r\n\r\n' >&7 2>/dev/null || true
got=$(timeout 5 cat <&7 2>/dev/null || true); exec 7<&- 7>&-
[ -z "$got" ] || stack_fail "a third connection from one IP was served: $got"
exec 5<&- 5>&- 6<&- 6>&-
ok2() { [ "$(curl -s "http://127.0.0.1:$lport/ping")" = pong ]; }
stack_wait 5 ok2 || stack_fail "connections not admitted again after others closed"
ok "max connections per client IP"

# --- admin: metrics, config; reload by API and SIGHUP; a bad config changes nothing
m=$(curl -s "$GW_ADMIN/metrics")
echo "$m" | grep -q '^strata_proxy_requests_total{route="canary",code_class="2xx"} 2000' || stack_fail "per-route metrics"
echo "$m" | grep -q '^strata_proxy_upstream_requests_total{cluster="a",code_class="2xx"}' || stack_fail "per-cluster metrics"
echo "$m" | grep -q '^strata_proxy_request_duration_seconds_bucket{route="echo"' || stack_fail "latency histogram"
if command -v promtool >/dev/null; then echo "$m" | promtool check metrics || stack_fail "promtool check metrics"; fi
[ "$(curl -s "$GW_ADMIN/config" | jq -r .version)" = v1 ] || stack_fail "config version"
write_config v2 pong2
out=$(curl -s -X POST "$GW_ADMIN/reload")
[ "$(echo "$out" | jq -r .version)" = v2 ] || stack_fail "reload by API: $out"
[ "$(curl -s "$P/ping")" = pong2 ] || stack_fail "new config not in force"
echo '{"listeners": [' >"$STACK_WORK/gw.json"
out=$(curl -s -w ' %{http_code}' -X POST "$GW_ADMIN/reload")
[[ "$out" == *'gw.json:'*' 400' ]] || stack_fail "bad reload: $out"
[ "$(curl -s "$P/ping")" = pong2 ] || stack_fail "a bad config changed the one in force"
write_config v3 pong3
kill -HUP "$GW_PID"
v3() { [ "$(curl -s "$P/ping")" = pong3 ]; }
stack_wait 5 v3 || stack_fail "SIGHUP reload"
ok "admin metrics (promtool clean), /config, reload by API and SIGHUP; a bad config keeps the old one"

# --- config errors name the file and field
bad() { # JSON EXPECTED
  echo "$1" >"$STACK_WORK/bad.json"
  local msg; if msg=$("$STRATA_BUILD_DIR/strata-proxy" --config "$STACK_WORK/bad.json" 2>&1); then stack_fail "accepted: $1"; fi
  [[ "$msg" == *"$2"* ]] || stack_fail "config error: got '$msg', expected '$2'"
}
L='"listeners":[{"name":"h","address":"127.0.0.1:0"}]'
bad "{$L,\"routes\":[{\"name\":\"r\",\"regex\":\"(\",\"direct_response\":{}}]}" '$.routes[0]: regex:'
bad "{$L,\"routes\":[{\"name\":\"r\",\"prefix\":\"/\"}]}" '$.routes[0]: exactly one of "cluster", "destinations", "redirect"'
bad "{$L,\"clusters\":[{\"name\":\"c\",\"endpoints\":[\"127.0.0.1:1\"],\"lb\":\"random\"}],\"routes\":[]}" '$.clusters[0]: lb: expected one of "round_robin", "least_request"'
bad "{$L,\"routes\":[{\"name\":\"r\",\"prefix\":\"/\",\"direct_response\":{},\"jwt\":{\"provider\":\"p\"}}]}" '$.routes[0].jwt: provider: no jwt_providers entry named "p"'
ok "config errors name the file and the field"

# --- quick mode
qport=$(stack_port)
"$STRATA_BUILD_DIR/strata" proxy --from "127.0.0.1:$qport" --to "http://127.0.0.1:$A_PORT" --workers 1 >"$STACK_WORK/quick.log" 2>&1 &
qpid=$!; STACK_PIDS+=("$qpid")
quick() { [ "$(curl -s "http://127.0.0.1:$qport/v1/hello/q")" = '{"hello":"q"}' ]; }
stack_wait 10 quick || stack_fail "quick mode"
if msg=$("$STRATA_BUILD_DIR/strata-proxy" --from 127.0.0.1:0 --to ftp://x 2>&1); then stack_fail "bad --to accepted"; fi
[[ "$msg" == *'--to: expected http://HOST:PORT'* ]] || stack_fail "quick mode error: $msg"
"$STRATA_BUILD_DIR/strata" proxy --help | grep -q -- '--to URL' || stack_fail "strata proxy --help"
if msg=$("$STRATA_BUILD_DIR/strata" nosuch 2>&1); then stack_fail "unknown command accepted"; fi
[[ "$msg" == *'unknown command "nosuch"'* ]] || stack_fail "unknown command message: $msg"
ok "quick mode: strata proxy --from/--to; CLI help and errors"

# --- drain through the admin API: readiness fails, the process exits 0
curl -s -X POST "$GW_ADMIN/drain" >/dev/null
for _ in $(seq 200); do kill -0 "$GW_PID" 2>/dev/null || break; sleep 0.05; done
kill -0 "$GW_PID" 2>/dev/null && stack_fail "the gateway did not exit after /drain"
rc=0; wait "$GW_PID" || rc=$?
[ "$rc" = 0 ] || stack_fail "exit status after drain: $rc"
ok "POST /drain drains and exits 0"
echo "$pass checks passed"
