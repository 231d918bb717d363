#!/usr/bin/env bash
# JWKS_URL by Service name through HTTP_PROXY (the sidecar's outbound
# listener), as deploy/ writes it: user-svc with
# JWKS_URL=http://auth-svc/.well-known/jwks.json fetches the keys through a
# strata-proxy whose only route is for host "auth-svc" (so the request must
# arrive in absolute form with that authority), becomes ready, and accepts a
# token signed with the published key. Without HTTP_PROXY the same URL is a
# start-up error naming JWKS_URL.
set -euo pipefail
source "$STRATA_SOURCE_DIR/tests/integration/lib/stack.sh"
stack_init
pass=0
ok() { pass=$((pass + 1)); echo "ok   $*"; }

# --- the issuer: a static JWKS on a plain HTTP server
key=$(stack_keys "$STACK_WORK/keys" signing)
mkdir -p "$STACK_WORK/www/.well-known"
"$STRATA_BUILD_DIR/strata-test-jwt" jwks "$key" >"$STACK_WORK/www/.well-known/jwks.json" || stack_fail "strata-test-jwt jwks"
jwks_port=$(stack_port)
python3 -m http.server -b 127.0.0.1 -d "$STACK_WORK/www" "$jwks_port" >"$STACK_WORK/jwks.log" 2>&1 &
STACK_PIDS+=("$!")
stack_wait 10 curl -fs -o /dev/null "http://127.0.0.1:$jwks_port/.well-known/jwks.json" || stack_fail "JWKS server not up"

# --- the "sidecar": an outbound listener that knows auth-svc by name only
out_port=$(stack_port); admin=$(stack_port)
cat >"$STACK_WORK/outbound.json" <<JSON
{"version": "jwks-proxy-1",
 "admin": {"address": "127.0.0.1:$admin"},
 "listeners": [{"name": "outbound", "address": "127.0.0.1:$out_port", "role": "outbound"}],
 "clusters": [{"name": "auth", "endpoints": ["127.0.0.1:$jwks_port"]}],
 "routes": [{"name": "auth", "listeners": ["outbound"], "host": "auth-svc", "prefix": "/", "cluster": "auth"}]}
JSON
stack_proxy sidecar "$STACK_WORK/outbound.json" "$admin"
[ "$(curl -s -o /dev/null -w '%{http_code}' -x "http://127.0.0.1:$out_port" http://other-svc/.well-known/jwks.json)" = 404 ] \
  || stack_fail "the outbound proxy routes hosts other than auth-svc"

# --- without HTTP_PROXY a named JWKS_URL is refused at start (user-svc
# stays up but never ready: its workers have no token verification)
db=$(stack_db jwksproxy)
np_port=$(stack_port)
env -u HTTP_PROXY -u http_proxy LISTEN_ADDR="127.0.0.1:$np_port" DATABASE_URL="$db" \
  JWKS_URL=http://auth-svc/.well-known/jwks.json "$STRATA_BUILD_DIR/strata-user-svc" >"$STACK_WORK/noproxy.log" 2>&1 &
np_pid=$!
STACK_PIDS+=("$np_pid")
stack_wait 20 grep -q 'JWKS_URL: host "auth-svc" is a name; without HTTP_PROXY' "$STACK_WORK/noproxy.log" \
  || stack_fail "no clear JWKS_URL error without HTTP_PROXY"
stack_wait 10 curl -s -o /dev/null "http://127.0.0.1:$np_port/healthz" || stack_fail "user-svc (no proxy) not serving"
code=$(curl -s -o "$STACK_WORK/body" -w '%{http_code}' "http://127.0.0.1:$np_port/readyz")
[ "$code" = 503 ] || stack_fail "user-svc without a usable JWKS_URL answers /readyz $code: $(cat "$STACK_WORK/body")"
kill -TERM "$np_pid"; wait "$np_pid" || true
ok "a named JWKS_URL without HTTP_PROXY is an error naming JWKS_URL (never ready)"

# --- with HTTP_PROXY: ready (keys fetched through the proxy) and tokens verify
stack_start user strata-user-svc DATABASE_URL="$db" JWKS_URL=http://auth-svc/.well-known/jwks.json \
  HTTP_PROXY="http://127.0.0.1:$out_port" HASH_THREADS=1
grep -q 'GET /.well-known/jwks.json' "$STACK_WORK/jwks.log" || stack_fail "the JWKS server saw no fetch"
ok "user-svc ready with JWKS_URL=http://auth-svc/... through HTTP_PROXY"

code=$(curl -s -o "$STACK_WORK/body" -w '%{http_code}' -X POST "$USER_URL/v1/users" -H 'Content-Type: application/json' \
  -d '{"email":"jwks@example.com","password":"correct horse battery","name":"Jay"}')
[ "$code" = 201 ] || stack_fail "register: $code $(cat "$STACK_WORK/body")"
id=$(jq -r .id "$STACK_WORK/body")
now=$(date +%s)
tok=$("$STRATA_BUILD_DIR/strata-test-jwt" sign "$key" \
  "{\"iss\":\"https://auth.strata.local\",\"aud\":\"strata\",\"sub\":\"$id\",\"iat\":$now,\"nbf\":$now,\"exp\":$((now + 300)),\"roles\":[\"user\"]}")
code=$(curl -s -o "$STACK_WORK/body" -w '%{http_code}' -H "Authorization: Bearer $tok" "$USER_URL/v1/users/me")
[ "$code" = 200 ] && jq -e '.email == "jwks@example.com"' "$STACK_WORK/body" >/dev/null \
  || stack_fail "GET /v1/users/me with a token signed by the proxied key set: $code $(cat "$STACK_WORK/body")"
other=$(stack_keys "$STACK_WORK/keys" other)
bad=$("$STRATA_BUILD_DIR/strata-test-jwt" sign "$other" \
  "{\"iss\":\"https://auth.strata.local\",\"aud\":\"strata\",\"sub\":\"$id\",\"iat\":$now,\"nbf\":$now,\"exp\":$((now + 300))}")
code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $bad" "$USER_URL/v1/users/me")
[ "$code" = 401 ] || stack_fail "a token of an unpublished key: $code, expected 401"
ok "tokens verify against the key set fetched through the proxy (and others are refused)"

echo "PASS: $pass checks"
