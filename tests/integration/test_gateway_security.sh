#!/usr/bin/env bash
# The gateway's security filters end to end, with real processes, real
# Redis and curl: the JWT matrix (signatures, expiry, issuer, audience,
# algorithm attacks, malformed and oversized tokens, key rotation through
# the JWKS, claims forwarded and client copies stripped, optional routes),
# local rate limits with their headers, a global limit shared by two
# gateway processes through Redis, and the WAF (OWASP CRS) blocking attacks while the reference API flows
# pass.
set -euo pipefail
source "$STRATA_SOURCE_DIR/tests/integration/lib/stack.sh"
stack_init
trap "" PIPE
pass=0
ok() { pass=$((pass + 1)); echo "ok   $*"; }
JWT=$STRATA_BUILD_DIR/strata-test-jwt

stack_start a strata-demo-service OTEL_SERVICE_NAME=backend
# JWKS: a directory served over HTTP; rotation = a new file content.
mkdir -p "$STACK_WORK/jwks" "$STACK_WORK/keys"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$STACK_WORK/keys/k1.pem" 2>/dev/null
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$STACK_WORK/keys/k2.pem" 2>/dev/null
openssl genpkey -algorithm ed25519 -out "$STACK_WORK/keys/ed.pem" 2>/dev/null
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$STACK_WORK/keys/rsa.pem" 2>/dev/null
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$STACK_WORK/keys/evil.pem" 2>/dev/null
"$JWT" jwks "$STACK_WORK/keys/k1.pem" "$STACK_WORK/keys/ed.pem" "$STACK_WORK/keys/rsa.pem" >"$STACK_WORK/jwks/jwks.json"
jport=$(stack_port)
python3 -m http.server "$jport" --bind 127.0.0.1 --directory "$STACK_WORK/jwks" >"$STACK_WORK/jwks.log" 2>&1 &
STACK_PIDS+=("$!")
jwks_up() { curl -sf "http://127.0.0.1:$jport/jwks.json" >/dev/null; }
stack_wait 10 jwks_up || stack_fail "JWKS server"

port=$(stack_port); port2=$(stack_port); admin=$(stack_port); admin2=$(stack_port)
config() { # PORT ADMIN
cat <<JSON
{"version": "sec", "admin": {"address": "127.0.0.1:$2"},
 "listeners": [{"name": "http", "address": "127.0.0.1:$1"}],
 "clusters": [{"name": "app", "endpoints": ["127.0.0.1:$A_PORT"]}],
 "redis": {"url": "$STRATA_TEST_REDIS_URL"},
 "jwt_providers": [{"name": "idp", "issuer": "https://idp.test", "audiences": ["api"], "leeway_s": 5, "jwks_refresh_s": 2,
                    "jwks_uri": "http://127.0.0.1:$jport/jwks.json",
                    "claims_to_headers": [{"claim": "sub", "header": "x-user-id"}, {"claim": "roles", "header": "x-user-roles"}]},
                   {"name": "es-only", "issuer": "https://idp.test", "algorithms": ["ES256"], "forward_token": false,
                    "jwks_uri": "http://127.0.0.1:$jport/jwks.json"}],
 "rate_limits": [{"name": "per-ip", "key": "client_ip", "requests": 5, "period_ms": 60000},
                 {"name": "per-key", "key": "header:x-api-key", "requests": 3, "period_ms": 60000},
                 {"name": "shared", "key": "header:x-tenant", "requests": 10, "period_ms": 60000, "scope": "global"},
                 {"name": "per-user", "key": "jwt_sub", "requests": 2, "period_ms": 60000}],
 "routes": [{"name": "login", "prefix": "/login", "cluster": "app", "rewrite_prefix": "/v1/echo"},
            {"name": "private", "prefix": "/private", "rewrite_prefix": "/v1/echo", "cluster": "app", "jwt": {"provider": "idp"}},
            {"name": "es", "prefix": "/es", "rewrite_prefix": "/v1/echo", "cluster": "app", "jwt": {"provider": "es-only"}},
            {"name": "maybe", "prefix": "/maybe", "rewrite_prefix": "/v1/echo", "cluster": "app", "jwt": {"provider": "idp", "mode": "optional"}},
            {"name": "user-limited", "prefix": "/mine", "rewrite_prefix": "/v1/echo", "cluster": "app", "jwt": {"provider": "idp"}, "rate_limit": "per-user"},
            {"name": "ip-limited", "prefix": "/ip", "rewrite_prefix": "/v1/echo", "cluster": "app", "rate_limit": "per-ip"},
            {"name": "key-limited", "prefix": "/key", "rewrite_prefix": "/v1/echo", "cluster": "app", "rate_limit": "per-key"},
            {"name": "global", "prefix": "/global", "rewrite_prefix": "/v1/echo", "cluster": "app", "rate_limit": "shared"},
            {"name": "waf", "prefix": "/v1", "cluster": "app", "waf": {"mode": "block"}},
            {"name": "waf-detect", "prefix": "/detect", "rewrite_prefix": "/v1/echo", "cluster": "app", "waf": {"mode": "detect"}}]}
JSON
}
config "$port" "$admin" >"$STACK_WORK/gw.json"
config "$port2" "$admin2" >"$STACK_WORK/gw2.json"
stack_proxy gw "$STACK_WORK/gw.json" "$admin" --workers 2
stack_proxy gw2 "$STACK_WORK/gw2.json" "$admin2" --workers 1
P=http://127.0.0.1:$port

now=$(date +%s)
claims() { # extra JSON members → a claims object valid for provider idp
  echo "{\"iss\":\"https://idp.test\",\"aud\":\"api\",\"sub\":\"user-42\",\"roles\":[\"reader\",\"writer\"],\"iat\":$now,\"exp\":$((now + 600))${1:+,$1}}"
}
tok() { "$JWT" sign "$STACK_WORK/keys/${2:-k1}.pem" "$(claims "${1:-}")"; }
b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
status_reason() { # TOKEN PATH → "STATUS REASON"
  local code
  code=$(curl -s -D "$STACK_WORK/h" -o "$STACK_WORK/b" -w '%{http_code}' ${1:+-H "Authorization: Bearer $1"} "$P${2:-/private}")
  echo "$code $(tr -d '\r' <"$STACK_WORK/h" | sed -n 's/^x-strata-reason: //Ip')"
}
expect() { # TOKEN EXPECTED [PATH]
  local got; got=$(status_reason "$1" "${3:-/private}")
  [ "$got" = "$2" ] || stack_fail "token ${1:0:40}…: expected '$2', got '$got' ($(cat "$STACK_WORK/b"))"
}

# --- the JWT matrix
good=$(tok)
out=$(curl -s -H "Authorization: Bearer $good" -H 'x-user-id: forged' -H 'x-user-roles: admin' "$P/private")
echo "$out" | jq -e '.headers["x-user-id"] == "user-42" and .headers["x-user-roles"] == "reader,writer"' >/dev/null \
  || stack_fail "claims forwarded, client copies stripped: $out"
out=$(curl -s -H 'x-user-id: forged' "$P/login")
echo "$out" | jq -e '.headers | has("x-user-id") | not' >/dev/null || stack_fail "claim header stripped on a public route: $out"
expect "" "401 jwt_missing"
grep -qi '^www-authenticate: Bearer error="invalid_token"' "$STACK_WORK/h" || stack_fail "WWW-Authenticate"
jq -e '.error.request_id and .error.route == "private"' "$STACK_WORK/b" >/dev/null || stack_fail "401 body: $(cat "$STACK_WORK/b")"
expect "$(tok '"exp":'$((now - 60)))" "401 jwt_expired"
expect "$(tok '"exp":'$((now - 2)))" "200 "          # within the 5 s leeway
expect "$(tok '"nbf":'$((now + 120)))" "401 jwt_not_yet_valid"
expect "$("$JWT" sign "$STACK_WORK/keys/k1.pem" "$(claims | jq -c '.iss = "https://evil.test"')")" "401 jwt_bad_issuer"
expect "$("$JWT" sign "$STACK_WORK/keys/k1.pem" "$(claims | jq -c '.aud = "other"')")" "401 jwt_bad_audience"
sig_other=$("$JWT" sign "$STACK_WORK/keys/evil.pem" "$(claims)")
kid1=$(jq -r '.keys[0].kid' "$STACK_WORK/jwks/jwks.json")
forged="$(printf '{"alg":"ES256","typ":"JWT","kid":"%s"}' "$kid1" | b64url).$(claims | b64url).${sig_other##*.}"
expect "$forged" "401 jwt_bad_signature"
expect "$(printf '{"alg":"none","typ":"JWT"}' | b64url).$(claims | b64url).c2ln" "401 jwt_alg_not_allowed"
[[ "$(status_reason "$(printf '{"alg":"none","typ":"JWT"}' | b64url).$(claims | b64url).")" == "401 jwt_"* ]] || stack_fail "alg none, empty signature"
# HS256 signed with the public key as the HMAC secret: the classic confusion attack
pub=$(openssl pkey -in "$STACK_WORK/keys/k1.pem" -pubout 2>/dev/null)
hs_in="$(printf '{"alg":"HS256","typ":"JWT","kid":"%s"}' "$kid1" | b64url).$(claims | b64url)"
hs_sig=$(printf '%s' "$hs_in" | openssl dgst -sha256 -mac HMAC -macopt "key:$pub" -binary | b64url)
expect "$hs_in.$hs_sig" "401 jwt_alg_not_allowed"
expect "$(head -c 9000 /dev/zero | tr '\0' a).b.c" "401 jwt_too_large"
expect "a.b" "401 jwt_malformed"
expect "!!!.###.\$\$\$" "401 jwt_malformed"
expect "$(tok "" ed)" "200 "                        # EdDSA
expect "$(tok "" rsa)" "200 "                       # RS256
expect "$(tok "" rsa)" "401 jwt_alg_not_allowed" /es # the es-only provider allows ES256 alone
expect "$good" "200 " /es
jq -e '.headers | has("authorization") | not' "$STACK_WORK/b" >/dev/null || stack_fail "forward_token false keeps the token"
curl -s -H "Authorization: Bearer $good" "$P/private" | jq -e '.headers.authorization | startswith("Bearer ")' >/dev/null \
  || stack_fail "the token is forwarded by default"
ok "JWT matrix: claims forwarded and stripped, missing/expired/leeway/nbf/iss/aud/signature/none/HS256-with-public-key/oversized/malformed, ES256/EdDSA/RS256 and the allowlist"

# --- optional routes: no token passes, an invalid one does not
expect "" "200 " /maybe
expect "$(tok '"exp":'$((now - 60)))" "401 jwt_expired" /maybe
ok "optional JWT: no token passes, a bad token is refused"

# --- key rotation: a token from a new key passes once the JWKS publishes it
new=$(tok "" k2)
expect "$new" "401 jwt_unknown_kid"
"$JWT" jwks "$STACK_WORK/keys/k1.pem" "$STACK_WORK/keys/k2.pem" "$STACK_WORK/keys/ed.pem" "$STACK_WORK/keys/rsa.pem" >"$STACK_WORK/jwks/jwks.json.new"
mv "$STACK_WORK/jwks/jwks.json.new" "$STACK_WORK/jwks/jwks.json"
rotated() { [ "$(status_reason "$new")" = "200 " ]; }
stack_wait 10 rotated || stack_fail "a token signed by the rotated-in key is still refused: $(status_reason "$new")"
ok "JWKS key rotation: a token from a newly published key passes without a restart"

# --- local rate limits: by client IP, by header, by JWT sub
for i in 1 2 3 4 5; do [ "$(curl -s -o /dev/null -w '%{http_code}' "$P/ip")" = 200 ] || stack_fail "per-ip request $i"; done
code=$(curl -s -D "$STACK_WORK/h" -o "$STACK_WORK/b" -w '%{http_code}' "$P/ip")
[ "$code" = 429 ] || stack_fail "the 6th request got $code"
h=$(tr -d '\r' <"$STACK_WORK/h")
echo "$h" | grep -qi '^retry-after: [1-9]' || stack_fail "Retry-After: $h"
echo "$h" | grep -qi '^ratelimit-limit: 5$' && echo "$h" | grep -qi '^ratelimit-remaining: 0$' && echo "$h" | grep -qi '^ratelimit-reset: [0-9]' \
  || stack_fail "RateLimit headers: $h"
jq -e '.error.code == "rate_limited" and .error.route == "ip-limited"' "$STACK_WORK/b" >/dev/null || stack_fail "429 body"
[ "$(curl -s -D - -o /dev/null "$P/key" -H 'x-api-key: k1' | tr -d '\r' | sed -n 's/^RateLimit-Remaining: //Ip')" = 2 ] || stack_fail "remaining on a 2xx"
curl -s -o /dev/null "$P/key" -H 'x-api-key: k1'; curl -s -o /dev/null "$P/key" -H 'x-api-key: k1'
[ "$(curl -s -o /dev/null -w '%{http_code}' "$P/key" -H 'x-api-key: k1')" = 429 ] || stack_fail "per-key limit"
[ "$(curl -s -o /dev/null -w '%{http_code}' "$P/key" -H 'x-api-key: k2')" = 200 ] || stack_fail "another key has its own bucket"
alice=$("$JWT" sign "$STACK_WORK/keys/k1.pem" "$(claims | jq -c '.sub = "alice"')")
bob=$("$JWT" sign "$STACK_WORK/keys/k1.pem" "$(claims | jq -c '.sub = "bob"')")
for i in 1 2; do expect "$alice" "200 " /mine; done
expect "$alice" "429 rate_limited" /mine
expect "$bob" "200 " /mine
ok "local rate limits by client IP, header and JWT sub; 429 with Retry-After and RateLimit-*"

# --- a global limit shared by two gateways through Redis
codes=""
for i in $(seq 12); do
  p=$([ $((i % 2)) = 0 ] && echo "$port" || echo "$port2")
  codes+="$(curl -s -o /dev/null -w '%{http_code}' -H 'x-tenant: acme' "http://127.0.0.1:$p/global") "
done
[ "$(echo "$codes" | tr ' ' '\n' | grep -c 200)" = 10 ] && [ "$(echo "$codes" | tr ' ' '\n' | grep -c 429)" = 2 ] \
  || stack_fail "global limit of 10 across two gateways: $codes"
ok "global rate limit shared by two gateway processes (10 of 12 allowed across both)"

# --- the WAF: attacks blocked with the request id and rule ids; real API traffic passes
waf() { # curl args… → "STATUS REASON"
  local code; code=$(curl -s -D "$STACK_WORK/h" -o "$STACK_WORK/b" -w '%{http_code}' "$@")
  echo "$code $(tr -d '\r' <"$STACK_WORK/h" | sed -n 's/^x-strata-reason: //Ip')"
}
blocked() { local got; got=$(waf "$@"); [ "$got" = "403 waf_blocked" ] || stack_fail "not blocked ($got): $*"; }
blocked -H 'X-Request-Id: waf-sqli-1' "$P/v1/echo?id=1'%20OR%20'1'='1"
jq -e '.error.request_id == "waf-sqli-1"' "$STACK_WORK/b" >/dev/null || stack_fail "403 body: $(cat "$STACK_WORK/b")"
blocked -X POST -H 'Content-Type: application/json' --data '{"name":"x\u0027 UNION SELECT password FROM users--"}' "$P/v1/echo"
blocked "$P/v1/echo?q=%3Cscript%3Ealert(1)%3C/script%3E"
blocked -X POST -H 'Content-Type: application/x-www-form-urlencoded' --data 'comment=<script>alert(document.cookie)</script>' "$P/v1/echo"
# raw traversal never reaches a route: the path is normalized first (/etc/passwd → 404)
got=$(waf --path-as-is "$P/v1/echo/../../../../etc/passwd"); [ "$got" = "404 route_not_found" ] || stack_fail "raw traversal: $got"
blocked "$P/v1/echo?file=..%2f..%2f..%2fetc%2fpasswd"
blocked -A 'sqlmap/1.7.2#stable (https://sqlmap.org)' "$P/v1/echo"
blocked -A 'Mozilla/5.00 (Nikto/2.1.6) (Evasions:None) (Test:000003)' "$P/v1/echo"
for _ in $(seq 50); do grep -q '"msg":"waf"' "$STACK_WORK/gw.log" && break; sleep 0.05; done
line=$(grep '"msg":"waf"' "$STACK_WORK/gw.log" | grep '"waf-sqli-1"' | head -1)
echo "$line" | jq -e '.action == "blocked" and .route == "waf" and (.rule_ids | test("942"))' >/dev/null || stack_fail "WAF audit line: $line"
# The reference flows (docs/services.md), as clients send them
now_tok=$(tok)
pass_flow() { local got; got=$(waf "$@"); [ "${got%% *}" = 200 ] || stack_fail "reference flow blocked ($got): $* — $(cat "$STACK_WORK/b")"; }
pass_flow -X POST -H 'Content-Type: application/json' --data '{"email":"ada@example.com","password":"correct horse battery staple","name":"Ada Lovelace"}' "$P/v1/echo"
pass_flow -X POST -H 'Content-Type: application/json' --data '{"email":"ada@example.com","password":"correct horse battery staple"}' "$P/v1/echo"
pass_flow -X POST -H 'Content-Type: application/json' --data '{"refresh_token":"Zk9yZ2V0LW1lLW5vdC0xMjM0NTY3ODkwYWJjZGVmZ2hpams"}' "$P/v1/echo"
pass_flow -H "Authorization: Bearer $now_tok" "$P/v1/echo"
pass_flow -X POST -H "Authorization: Bearer $now_tok" -H 'Idempotency-Key: 6f1c2a9e-8d7b-4c3a-9f0e-1a2b3c4d5e6f' -H 'Content-Type: application/json' \
  --data '{"items":[{"sku":"BOOK-42","quantity":2,"unit_price_cents":1999}],"currency":"EUR"}' "$P/v1/echo"
pass_flow -H "Authorization: Bearer $now_tok" "$P/v1/echo?limit=20&cursor=eyJpZCI6IjEyMyJ9"
ok "WAF blocks SQLi (query, JSON), XSS (query, form), traversal (encoded; raw is normalized away), scanners; audit line with rule ids; reference flows pass"
[ "$(waf "$P/detect?id=1'%20OR%20'1'='1")" = "200 " ] || stack_fail "detect-only mode must pass"
for _ in $(seq 50); do grep '"msg":"waf"' "$STACK_WORK/gw.log" | grep -q '"detected"' && break; sleep 0.05; done
grep '"msg":"waf"' "$STACK_WORK/gw.log" | grep -q '"action":"detected"' || stack_fail "detect mode logs the match"
ok "WAF detect-only mode passes and logs"

# --- metrics count what the filters did
m=$(curl -s "$GW_ADMIN/metrics")
echo "$m" | grep -q '^strata_proxy_jwt_rejected_total{route="private",reason="jwt_expired"} 1' || stack_fail "jwt metric"
echo "$m" | grep -q '^strata_proxy_rate_limited_total{route="ip-limited"} 1' || stack_fail "rate limit metric"
echo "$m" | grep -q '^strata_proxy_waf_blocked_total{route="waf",action="blocked"} 7' || stack_fail "waf metric: $(echo "$m" | grep waf_blocked)"
ok "metrics: JWT rejections by reason, rate-limited, WAF blocked"

echo "$pass checks passed"
