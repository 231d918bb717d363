#!/usr/bin/env bash
# auth-svc end to end, with real user-svc, PostgreSQL and Redis from the
# harness and real clients (curl, jq, redis-cli, node + jose as an
# independent JWT verifier): login, the access token checked by jose against
# the JWKS, identical 401s, throttling per account and per client address,
# refresh rotation and reuse detection, logout, key rotation across a
# restart, malformed bodies, user-svc down or hanging (503/504), no secrets
# in logs.
set -euo pipefail
: "${STRATA_SOURCE_DIR:?run through ctest}"
# shellcheck source=lib/stack.sh
source "$STRATA_SOURCE_DIR/tests/integration/lib/stack.sh"
stack_init
for tool in curl jq redis-cli node npm openssl sha256sum; do
  command -v "$tool" >/dev/null || stack_fail "$tool is required"
done
ok() { echo "ok   $*"; }

# --- jose, the independent verifier (never committed: a cache under /tmp).
# npm unreachable → the test fails; it does not skip.
NPM_DIR=/tmp/strata-npm-cache
mkdir -p "$NPM_DIR"
(
  flock 9
  [ -f "$NPM_DIR/node_modules/jose/package.json" ] ||
    npm install --prefix "$NPM_DIR" --no-audit --no-fund --loglevel=error jose@5 >"$STACK_WORK/npm.log" 2>&1
) 9>"$NPM_DIR/.lock" || stack_fail "npm install jose failed: $(tail -5 "$STACK_WORK/npm.log")"
# The script sits beside node_modules so that `import 'jose'` resolves there.
VERIFY="$NPM_DIR/strata-verify-$$.mjs"
cat >"$VERIFY" <<'EOF'
import { createRemoteJWKSet, jwtVerify, calculateJwkThumbprint } from 'jose';
const [jwksUrl, token, issuer, audience] = process.argv.slice(2);
const jwks = await (await fetch(jwksUrl)).json();
const { payload, protectedHeader } = await jwtVerify(token, createRemoteJWKSet(new URL(jwksUrl)),
  { issuer, audience, algorithms: ['ES256'] });
const key = jwks.keys.find((k) => k.kid === protectedHeader.kid);
const thumbprint = await calculateJwkThumbprint({ kty: key.kty, crv: key.crv, x: key.x, y: key.y });
console.log(JSON.stringify({ header: protectedHeader, payload, thumbprint }));
EOF
trap 'rm -f "$VERIFY"; stack_cleanup' EXIT

# --- the stack: auth first (user-svc fetches its JWKS at start), on a port
# chosen for user-svc in advance.
start_at() { # PORT NAME BINARY [VAR=VALUE...]: stack_start on a given port
  START_AT_PORT=$1; shift
  stack_port() { echo "$START_AT_PORT"; }
  stack_start "$@"
  stack_port() { "$STRATA_BUILD_DIR/strata-test-freeport"; }
}
for _ in $(seq 240); do [ -x "$STRATA_BUILD_DIR/strata-user-svc" ] && break; sleep 0.5; done
[ -x "$STRATA_BUILD_DIR/strata-user-svc" ] || stack_fail "strata-user-svc is not built in $STRATA_BUILD_DIR"

KEYS=$STACK_WORK/keys
key1=$(stack_keys "$KEYS" a-first)
REDIS_URL=${STRATA_TEST_REDIS_URL%/*}/5 # a database of our own on the harness Redis
redis() { redis-cli -u "$REDIS_URL" "$@"; }
redis FLUSHDB >/dev/null
ISS=https://auth.test.strata
AUD=strata-test
user_port=$(stack_port)
auth_port=$(stack_port)
AUTH_ENV=(REDIS_URL="$REDIS_URL" USER_SERVICE_URL="http://127.0.0.1:$user_port" JWT_KEYS_DIR="$KEYS"
  JWT_ISSUER="$ISS" JWT_AUDIENCE="$AUD" LOGIN_MAX_FAILURES=5 LOGIN_MAX_FAILURES_IP=8 TRUSTED_PROXY_HOPS=1
  MAX_BODY_BYTES=65536 LOG_LEVEL=debug WORKERS=2)
start_at "$auth_port" auth strata-auth-svc "${AUTH_ENV[@]}"
db=$(stack_db auth_users)
start_at "$user_port" user strata-user-svc DATABASE_URL="$db" JWKS_URL="$AUTH_URL/.well-known/jwks.json" \
  JWT_ISSUER="$ISS" JWT_AUDIENCE="$AUD"
A=$AUTH_URL

# json POST helper: status into $code, body into $body.
post() { # URL JSON [curl args...]
  local url=$1 data=$2; shift 2
  code=$(curl -s -o "$STACK_WORK/body" -w '%{http_code}' -D "$STACK_WORK/headers" -X POST \
    -H 'Content-Type: application/json' --data-binary "$data" "$@" "$url")
  body=$(cat "$STACK_WORK/body")
}
header() { tr -d '\r' <"$STACK_WORK/headers" | sed -n "s/^$1: //Ip" | head -1; }
login() { # EMAIL PASSWORD [IP]
  post "$A/v1/auth/login" "$(jq -nc --arg e "$1" --arg p "$2" '{email:$e,password:$p}')" \
    -H "X-Forwarded-For: ${3:-198.51.100.1}"
}
is_error() { # STATUS CODE
  [ "$code" = "$1" ] || stack_fail "expected $1, got $code: $body"
  jq -e --arg c "$2" '.error.code == $c and (.error.message|length) > 0 and (.error.request_id|length) > 0' \
    <<<"$body" >/dev/null || stack_fail "expected error $2: $body"
}
verify() { node "$VERIFY" "$A/.well-known/jwks.json" "$@"; }

# --- register through user-svc
EMAIL=ada@example.com
PASS='correct horse battery staple'
code=$(curl -s -o "$STACK_WORK/body" -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
  -d "$(jq -nc --arg e "$EMAIL" --arg p "$PASS" '{email:$e,password:$p,name:"Ada"}')" "$USER_URL/v1/users")
[ "$code" = 201 ] || stack_fail "register: $code $(cat "$STACK_WORK/body")"
USER_ID=$(jq -r '.id' "$STACK_WORK/body")
ok "user registered through user-svc"

# --- discovery
jwks=$(curl -s "$A/.well-known/jwks.json")
jq -e '.keys | length == 1 and (.[0] | .kty == "EC" and .crv == "P-256" and .alg == "ES256" and .use == "sig" and has("d") == false)' \
  <<<"$jwks" >/dev/null || stack_fail "jwks: $jwks"
KID1=$(jq -r '.keys[0].kid' <<<"$jwks")
oidc=$(curl -s "$A/.well-known/openid-configuration")
jq -e --arg iss "$ISS" '.issuer == $iss and .jwks_uri == ($iss + "/.well-known/jwks.json") and .id_token_signing_alg_values_supported == ["ES256"]' \
  <<<"$oidc" >/dev/null || stack_fail "openid-configuration: $oidc"
ok "JWKS (public EC keys only) and openid-configuration"

# --- login, and the access token checked independently
login "  ADA@Example.com " "$PASS" # normalised as user-svc does
[ "$code" = 200 ] || stack_fail "login: $code $body"
jq -e '.token_type == "Bearer" and .expires_in == 900 and (.refresh_token | test("^[A-Za-z0-9_-]{43}$"))' \
  <<<"$body" >/dev/null || stack_fail "token response: $body"
[ "$(header Cache-Control)" = no-store ] || stack_fail "token response must not be cached"
AT1=$(jq -r .access_token <<<"$body"); RT1=$(jq -r .refresh_token <<<"$body")
out=$(verify "$AT1" "$ISS" "$AUD") || stack_fail "jose rejected the access token: $out"
jq -e --arg kid "$KID1" --arg sub "$USER_ID" --arg iss "$ISS" --arg aud "$AUD" '
  .header.alg == "ES256" and .header.kid == $kid and .thumbprint == $kid and
  .payload.iss == $iss and .payload.aud == $aud and .payload.sub == $sub and
  .payload.exp - .payload.iat == 900 and .payload.nbf == .payload.iat and
  (.payload.jti|length) >= 16 and (.payload.sid|length) >= 16 and
  (.payload.roles|type) == "array" and .payload.email == "ada@example.com"' <<<"$out" >/dev/null ||
  stack_fail "claims: $out"
SID1=$(jq -r .payload.sid <<<"$out")
# The checker can fail: another audience, a flipped signature byte.
verify "$AT1" "$ISS" other-audience >/dev/null 2>&1 && stack_fail "jose accepted a wrong audience"
# (a character in the middle of the signature: the last one carries unused bits)
c=${AT1: -20:1}; bad="${AT1:0:${#AT1}-20}$([ "$c" = A ] && echo B || echo A)${AT1: -19}"
verify "$bad" "$ISS" "$AUD" >/dev/null 2>&1 && stack_fail "jose accepted a tampered signature"
ok "login: ES256 token verified by jose (kid = RFC 7638 thumbprint, exp-iat = 900, claims)"

# user-svc, a zero-trust verifier of its own, accepts it too
me=$(curl -s -H "Authorization: Bearer $AT1" "$USER_URL/v1/users/me")
jq -e --arg id "$USER_ID" '.id == $id' <<<"$me" >/dev/null || stack_fail "user-svc /v1/users/me: $me"
ok "user-svc accepts the token (its JWKS from auth-svc)"

# --- refresh tokens are stored hashed, with a TTL
h1=$(printf %s "$RT1" | sha256sum | cut -d' ' -f1)
[ "$(redis HGET "refresh:$h1" sid)" = "$SID1" ] || stack_fail "refresh:<sha256> not bound to the session"
ttl=$(redis TTL "refresh:$h1"); [ "$ttl" -gt 1209000 ] && [ "$ttl" -le 1209600 ] || stack_fail "refresh TTL $ttl"
redis --scan | grep -qF "$RT1" && stack_fail "a refresh token in clear in Redis"
redis DUMP "session:$SID1" | grep -qaF "$RT1" && stack_fail "a refresh token in clear in the session"
ok "refresh token stored as SHA-256 with a 14-day TTL"

# --- identical 401s for a wrong password and an unknown email
login "$EMAIL" 'wrong password 1' 198.51.100.2; is_error 401 invalid_credentials; b1=$(jq -c 'del(.error.request_id)' <<<"$body")
login nobody@example.com 'wrong password 1' 198.51.100.2; is_error 401 invalid_credentials; b2=$(jq -c 'del(.error.request_id)' <<<"$body")
[ "$b1" = "$b2" ] || stack_fail "401 bodies differ: $b1 vs $b2"
login not-an-email 'x' 198.51.100.2; is_error 401 invalid_credentials
b3=$(jq -c 'del(.error.request_id)' <<<"$body"); [ "$b1" = "$b3" ] || stack_fail "401 bodies differ: $b3"
ok "wrong password, unknown email and unparsable email: one 401 body"

# --- refresh rotation, then reuse detection
post "$A/v1/auth/refresh" "{\"refresh_token\":\"$RT1\"}"
[ "$code" = 200 ] || stack_fail "refresh: $code $body"
RT2=$(jq -r .refresh_token <<<"$body"); AT2=$(jq -r .access_token <<<"$body")
[ "$RT2" != "$RT1" ] || stack_fail "refresh token not rotated"
out=$(verify "$AT2" "$ISS" "$AUD") || stack_fail "refreshed token: $out"
jq -e --arg sid "$SID1" --arg sub "$USER_ID" '.payload.sid == $sid and .payload.sub == $sub and .payload.email == "ada@example.com"' \
  <<<"$out" >/dev/null || stack_fail "refreshed claims: $out"
[ "$(redis HGET "refresh:$h1" used)" = 1 ] || stack_fail "old refresh token not marked used"
post "$A/v1/auth/refresh" "{\"refresh_token\":\"$RT2\"}"
[ "$code" = 200 ] || stack_fail "second refresh: $code $body"
RT3=$(jq -r .refresh_token <<<"$body")
ok "refresh rotates (new access + refresh, same session)"
post "$A/v1/auth/refresh" "{\"refresh_token\":\"$RT1\"}"        # reuse of a rotated token
is_error 401 invalid_refresh_token
[ "$(redis HGET "session:$SID1" revoked)" = 1 ] || stack_fail "session not revoked on reuse"
post "$A/v1/auth/refresh" "{\"refresh_token\":\"$RT3\"}"        # the newest one is dead too
is_error 401 invalid_refresh_token
grep -q '"msg":"refresh token reuse: session revoked"' "$STACK_WORK/auth.log" || stack_fail "reuse not logged"
ok "reuse of a rotated token → 401 and the whole session revoked"

# --- logout
login "$EMAIL" "$PASS"; [ "$code" = 200 ] || stack_fail "login: $code $body"
RT=$(jq -r .refresh_token <<<"$body")
post "$A/v1/auth/logout" "{\"refresh_token\":\"$RT\"}"; [ "$code" = 204 ] && [ -z "$body" ] || stack_fail "logout: $code $body"
post "$A/v1/auth/refresh" "{\"refresh_token\":\"$RT\"}"; is_error 401 invalid_refresh_token
post "$A/v1/auth/logout" "{\"refresh_token\":\"$RT\"}"; [ "$code" = 204 ] || stack_fail "second logout: $code"
post "$A/v1/auth/logout" '{"refresh_token":"never-issued"}'; [ "$code" = 204 ] || stack_fail "unknown token logout: $code"
ok "logout revokes the session (idempotent 204)"

# --- malformed bodies change nothing
before=$(redis DBSIZE)
code=$(curl -s -o "$STACK_WORK/body" -w '%{http_code}' -X POST -d '{"email":"a","password":"b"}' "$A/v1/auth/login")
body=$(cat "$STACK_WORK/body"); is_error 415 "$(jq -r .error.code <<<"$body")"
post "$A/v1/auth/login" '{"email":'; is_error 400 invalid_json
post "$A/v1/auth/login" '[1,2]'; [ "$code" = 422 ] || stack_fail "array body: $code"
post "$A/v1/auth/login" '{"email":"a@b.c"}'; is_error 422 validation_failed
jq -e '.error.message | test("password")' <<<"$body" >/dev/null || stack_fail "missing field not named: $body"
post "$A/v1/auth/login" '{"email":5,"password":"x"}'; is_error 422 validation_failed
post "$A/v1/auth/login" '{"email":"a@b.c","password":"x","admin":true}'; is_error 422 validation_failed
post "$A/v1/auth/login" '{"email":"a@b.c","email":"b@b.c","password":"x"}'; is_error 400 invalid_json
post "$A/v1/auth/refresh" '{}'; is_error 422 validation_failed
post "$A/v1/auth/refresh" '{"refresh_token":""}'; is_error 422 validation_failed
post "$A/v1/auth/logout" '{"refresh_token":7}'; is_error 422 validation_failed
post "$A/v1/auth/login" "{\"email\":\"$(head -c 70000 /dev/zero | tr '\0' a)\",\"password\":\"x\"}"; [ "$code" = 413 ] || stack_fail "big body: $code"
[ "$(redis DBSIZE)" = "$before" ] || stack_fail "a rejected request changed Redis"
ok "malformed bodies → 400/413/415/422, Redis unchanged"

# --- throttling per account: 5 failures, then 429 even with the right password
VICTIM=grace@example.com
curl -s -o /dev/null -X POST -H 'Content-Type: application/json' \
  -d "$(jq -nc --arg e "$VICTIM" --arg p "$PASS" '{email:$e,password:$p,name:"Grace"}')" "$USER_URL/v1/users"
for i in 1 2 3 4 5; do login "$VICTIM" "bad password $i" "192.0.2.$i"; is_error 401 invalid_credentials; done
login "$VICTIM" "$PASS" 192.0.2.77; is_error 429 rate_limited
ra=$(header Retry-After); [[ "$ra" =~ ^[0-9]+$ ]] && [ "$ra" -ge 1 ] && [ "$ra" -le 900 ] || stack_fail "Retry-After: '$ra'"
calls=$(grep -c '"path":"/internal/v1/credentials/verify"' "$STACK_WORK/user.log" || true)
login "$VICTIM" "$PASS" 192.0.2.78; is_error 429 rate_limited
[ "$(grep -c '"path":"/internal/v1/credentials/verify"' "$STACK_WORK/user.log" || true)" = "$calls" ] ||
  stack_fail "a throttled login still called user-svc"
login "$EMAIL" "$PASS" 192.0.2.79; [ "$code" = 200 ] || stack_fail "another account is not throttled: $code"
ok "5 failures per account → 429 with Retry-After, before calling user-svc"

# a burst of 12 parallel guesses: exactly 5 reach user-svc (attempts are
# counted atomically before the call, not after it)
burst=()
for i in $(seq 12); do
  curl -s -o /dev/null -w '%{http_code}\n' -X POST -H 'Content-Type: application/json' -H "X-Forwarded-For: 192.0.2.$((100 + i))" \
    -d '{"email":"burst@example.com","password":"guess"}' "$A/v1/auth/login" >"$STACK_WORK/burst.$i" &
  burst+=("$!")
done
wait "${burst[@]}"
codes=$(cat "$STACK_WORK"/burst.* | sort | uniq -c | awk '{print $2 "x" $1}' | tr '\n' ' ')
[ "$codes" = "401x5 429x7 " ] || stack_fail "burst of 12: $codes"
ok "parallel burst: exactly 5 attempts pass the account limit"

# per client address: 8 failures over different accounts
for i in $(seq 8); do login "u$i@example.com" 'nope' 203.0.113.9; is_error 401 invalid_credentials; done
login "$EMAIL" "$PASS" 203.0.113.9; is_error 429 rate_limited
login "$EMAIL" "$PASS" 203.0.113.10; [ "$code" = 200 ] || stack_fail "another address is not throttled: $code"
ok "failures per client address (X-Forwarded-For behind TRUSTED_PROXY_HOPS=1) → 429"

# --- metrics
m=$(curl -s "$A/metrics")
grep -q '^strata_auth_refreshes_total{result="reuse_detected"} 1$' <<<"$m" || stack_fail "reuse metric: $(grep auth_ <<<"$m")"
grep -q '^strata_auth_logins_total{result="throttled"} [1-9]' <<<"$m" || stack_fail "throttle metric: $(grep auth_ <<<"$m")"
ok "metrics"

# --- key rotation: a newer key signs after a restart; old tokens still verify
login "$EMAIL" "$PASS"; RT_OLD=$(jq -r .refresh_token <<<"$body")
sleep 0.01
stack_keys "$KEYS" b-second >/dev/null
stack_stop auth
[ "$STACK_STATUS" = 0 ] || stack_fail "auth-svc exit status $STACK_STATUS after SIGTERM"
start_at "$auth_port" auth strata-auth-svc "${AUTH_ENV[@]}"
jwks=$(curl -s "$A/.well-known/jwks.json")
jq -e --arg k "$KID1" '.keys | length == 2 and (map(.kid) | index($k) != null)' <<<"$jwks" >/dev/null ||
  stack_fail "both keys must be published: $jwks"
login "$EMAIL" "$PASS"; [ "$code" = 200 ] || stack_fail "login after rotation: $code"
AT_NEW=$(jq -r .access_token <<<"$body")
out=$(verify "$AT_NEW" "$ISS" "$AUD") || stack_fail "new token: $out"
KID2=$(jq -r .header.kid <<<"$out")
[ "$KID2" != "$KID1" ] && [ "$KID2" = "$(jq -r '.keys[0].kid' <<<"$jwks")" ] || stack_fail "new tokens must carry the new kid"
verify "$AT1" "$ISS" "$AUD" >/dev/null || stack_fail "a token of the old key no longer verifies"
post "$A/v1/auth/refresh" "{\"refresh_token\":\"$RT_OLD\"}"; [ "$code" = 200 ] || stack_fail "session lost on restart: $code"
me=$(curl -s -H "Authorization: Bearer $AT_NEW" "$USER_URL/v1/users/me")
jq -e --arg id "$USER_ID" '.id == $id' <<<"$me" >/dev/null || stack_fail "user-svc with a new-kid token: $me"
ok "key rotation: new kid signs, both keys published, old tokens and sessions still valid"

# --- through HTTP_PROXY (the sidecar's role; here user-svc itself takes
# the absolute-form request), with a service name only a proxy can resolve
stack_start authp strata-auth-svc "${AUTH_ENV[@]}" HTTP_PROXY="$USER_URL" USER_SERVICE_URL=http://user-service
code=$(curl -s -o "$STACK_WORK/body" -w '%{http_code}' -X POST -H 'Content-Type: application/json' -H 'X-Request-Id: via-proxy-1' \
  -d "$(jq -nc --arg e "$EMAIL" --arg p "$PASS" '{email:$e,password:$p}')" "$AUTHP_URL/v1/auth/login")
[ "$code" = 200 ] || stack_fail "login through HTTP_PROXY: $code $(cat "$STACK_WORK/body")"
stack_logs user | jq -e -s 'any(.[]; .request_id == "via-proxy-1" and .path == "/internal/v1/credentials/verify")' \
  >/dev/null || stack_fail "user-svc did not get the proxied call with the request id"
ok "USER_SERVICE_URL by name through HTTP_PROXY, X-Request-Id propagated"

# --- user-svc hanging → 504, down → 503
hang_port=$(stack_port)
node -e "require('net').createServer(() => {}).listen($hang_port, '127.0.0.1')" &
STACK_PIDS+=("$!")
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$hang_port") 2>/dev/null && break; sleep 0.05; done
stack_start auth2 strata-auth-svc "${AUTH_ENV[@]}" USER_SERVICE_URL="http://127.0.0.1:$hang_port" USER_SERVICE_TIMEOUT_MS=300
A2=$AUTH2_URL
code=$(curl -s -o "$STACK_WORK/body" -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
  -d '{"email":"x@example.com","password":"y"}' "$A2/v1/auth/login"); body=$(cat "$STACK_WORK/body")
is_error 504 upstream_timeout
stack_stop user
login "$EMAIL" "$PASS" 198.51.100.50; is_error 503 upstream_unavailable
ok "user-svc hanging → 504, down → 503"

# --- readiness follows Redis
a3_port=$(stack_port)
env LISTEN_ADDR="127.0.0.1:$a3_port" "${AUTH_ENV[@]}" REDIS_URL="redis://127.0.0.1:$(stack_port)/0" \
  "$STRATA_BUILD_DIR/strata-auth-svc" >"$STACK_WORK/auth3.log" 2>&1 &
STACK_PIDS+=("$!")
for _ in $(seq 100); do
  code=$(curl -s -o "$STACK_WORK/body" -w '%{http_code}' "http://127.0.0.1:$a3_port/readyz" || true)
  [ "$code" != 000 ] && break; sleep 0.05
done
body=$(cat "$STACK_WORK/body")
[ "$code" = 503 ] && grep -q Redis <<<"$body" || stack_fail "readyz without Redis: $code $body"
code=$(curl -s -o "$STACK_WORK/body" -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
  -d '{"email":"x@example.com","password":"y"}' "http://127.0.0.1:$a3_port/v1/auth/login"); body=$(cat "$STACK_WORK/body")
is_error 503 unavailable
code=$(curl -s -o "$STACK_WORK/body" -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
  -d "{\"refresh_token\":\"$RT_OLD\"}" "http://127.0.0.1:$a3_port/v1/auth/refresh"); body=$(cat "$STACK_WORK/body")
is_error 503 unavailable
ok "readyz fails while Redis is unreachable; login and refresh answer 503 JSON (fail closed)"

# --- bad configuration stops the start, naming what is wrong
bad_keys=$STACK_WORK/bad-keys; mkdir -p "$bad_keys"; echo 'not a key' >"$bad_keys/broken.pem"
rc=0; env "${AUTH_ENV[@]}" JWT_KEYS_DIR="$bad_keys" LISTEN_ADDR=127.0.0.1:0 \
  "$STRATA_BUILD_DIR/strata-auth-svc" >"$STACK_WORK/cfg.out" 2>&1 || rc=$?
[ "$rc" = 2 ] && grep -q 'broken.pem' "$STACK_WORK/cfg.out" || stack_fail "bad key file: rc=$rc $(cat "$STACK_WORK/cfg.out")"
openssl genpkey -algorithm ED25519 -out "$bad_keys/broken.pem" 2>/dev/null
rc=0; env "${AUTH_ENV[@]}" JWT_KEYS_DIR="$bad_keys" LISTEN_ADDR=127.0.0.1:0 \
  "$STRATA_BUILD_DIR/strata-auth-svc" >"$STACK_WORK/cfg.out" 2>&1 || rc=$?
[ "$rc" = 2 ] && grep -q 'ES256' "$STACK_WORK/cfg.out" || stack_fail "non-P-256 key: rc=$rc $(cat "$STACK_WORK/cfg.out")"
rc=0; env -u REDIS_URL "${AUTH_ENV[@]/#REDIS_URL=*/LOG_LEVEL=info}" LISTEN_ADDR=127.0.0.1:0 \
  "$STRATA_BUILD_DIR/strata-auth-svc" >"$STACK_WORK/cfg.out" 2>&1 || rc=$?
[ "$rc" = 2 ] && grep -q 'REDIS_URL' "$STACK_WORK/cfg.out" || stack_fail "no REDIS_URL: rc=$rc $(cat "$STACK_WORK/cfg.out")"
rc=0; env "${AUTH_ENV[@]}" ACCESS_TTL_S=abc LISTEN_ADDR=127.0.0.1:0 \
  "$STRATA_BUILD_DIR/strata-auth-svc" >"$STACK_WORK/cfg.out" 2>&1 || rc=$?
[ "$rc" = 2 ] && grep -q 'ACCESS_TTL_S' "$STACK_WORK/cfg.out" || stack_fail "bad ACCESS_TTL_S: rc=$rc $(cat "$STACK_WORK/cfg.out")"
ok "invalid keys or environment stop the start with a message naming them"

# --- no secrets in logs
for s in "$PASS" "$RT1" "$RT2" "$RT_OLD" "${AT1##*.}"; do
  grep -qF -- "$s" "$STACK_WORK"/auth*.log && stack_fail "a secret in auth-svc's log"
done
stack_logs auth | jq -e -s 'length > 0 and all(.[]; has("ts") and has("level") and has("msg"))' >/dev/null ||
  stack_fail "auth-svc logs are not JSON lines"
ok "no passwords or tokens in logs"
echo "all auth-svc checks passed"
